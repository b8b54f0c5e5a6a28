"""Data-parallel training on N processes: accelerate sets the process group up (gloo on CPU,
NCCL on GPU) under torchrun, which launches the processes — on one machine, or on several
through its rendezvous.

Every rank holds a whole copy of the model. A global batch (the batch one process would
train on) is split into contiguous parts, one per rank; each rank computes its part's share
of the global loss, the gradients are all-reduced, and every rank takes the same optimizer
step, so the run follows the one-process run on the same global batches:

    dp = data_parallel()                          # world size 1 outside torchrun
    rows = batch[dp.part(len(batch))]             # this rank's part of the global batch
    for mb, share in dp.minibatches(splits, weights):
        (share * loss_of(mb)).backward()          # mb: this rank's rows of a global minibatch
        dp.sync_gradients(params)                 # the global batch's gradient on every rank

A loss that is a weighted mean over a minibatch is the global one when each rank scales its
own mean by `share` = world size × (its weight / the minibatch's weight). Figures are
reduced over ranks (`mean`, `masked_mean`, `whiten`), so logs and decisions (PPO's KL cap)
are the global batch's, the same on every rank. What differs from one process: float sums
in a different order (and padding to a different width), and the random draws of sampling
(each rank samples its prompts from its own stream; see `sampling_generator`).

`trainer.launch` starts the processes: a command line again under torchrun (`flywheel
train reward --processes N`), or one function whose rank-0 result goes back to the caller
(the cycle's training stages). Only rank 0 saves and registers; the other ranks never open
the store.
"""

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from trainer.rlhf.ppo_math import masked_mean, masked_sum, whiten


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the ranks; every method is the identity on one process."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self, count: int, *, allow_empty: bool = False) -> slice:
        """This rank's contiguous part of `count` rows; the ranks' parts tile 0…count. A
        part must hold a row unless `allow_empty` (a batch to train on is never smaller than
        the number of processes)."""
        if count < self.world_size and not allow_empty:
            raise ValueError(f"a batch of {count} cannot be split over {self.world_size} "
                             "processes: make it at least as large as the number of processes")
        return slice(count * self.rank // self.world_size,
                     count * (self.rank + 1) // self.world_size)

    # -- figures over the global batch ------------------------------------------------------

    def sum(self, tensor: Tensor) -> Tensor:
        """Σ over ranks (a new tensor)."""
        total = tensor.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(total)
        return total

    def mean(self, values: Tensor) -> float:
        """The mean of every rank's `values` together, [n_rank] -> a float."""
        if self.world_size == 1:
            return values.float().mean().item()
        total = self.sum(torch.stack([values.float().sum(),
                                      torch.tensor(float(values.numel()), device=values.device)]))
        return (total[0] / total[1]).item()

    def masked_mean(self, values: Tensor, mask: Tensor) -> float:
        """`ppo_math.masked_mean` over every rank's rows, [n_rank, T] -> a float."""
        if self.world_size == 1:
            return masked_mean(values, mask).item()
        total = self.sum(torch.stack([masked_sum(values, mask).float(), mask.sum().float()]))
        return (total[0] / total[1].clamp(min=1.0)).item()

    def whiten(self, values: Tensor, mask: Tensor) -> Tensor:
        """`ppo_math.whiten` with the mean and variance of every rank's rows. [n_rank, T]."""
        if self.world_size == 1:
            return whiten(values, mask)
        count_and_sum = self.sum(torch.stack([mask.sum(), masked_sum(values, mask)]))
        count, mean = count_and_sum[0], count_and_sum[1] / count_and_sum[0].clamp(min=1.0)
        squares = self.sum(masked_sum((values - mean) ** 2, mask))
        var = squares / (count - 1) if count >= 2 else torch.zeros_like(squares)
        return (values - mean) * torch.rsqrt(var + 1e-8) * mask

    def shares(self, share: float, values: Sequence[Tensor]) -> list[float]:
        """Global figures of a minibatch from each rank's `values` (means over its rows,
        weighted by `share` as its loss is): Σ_ranks share · value / world size."""
        if self.world_size == 1:
            return [value.item() for value in values]
        stacked = torch.stack([value.detach().float() for value in values]) * share
        return (self.sum(stacked) / self.world_size).tolist()

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order (the inverse of `part`)."""
        if self.world_size == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Every rank's rows [n_rank, …], concatenated in rank order, on this rank's device."""
        if self.world_size == 1:
            return tensor
        return torch.cat([t.to(tensor.device) for t in self.gather([tensor.cpu()])])

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object), on every rank."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- gradients and parameters -----------------------------------------------------------

    def minibatches(self, splits: Iterable[Tensor], weights: Tensor
                    ) -> Iterator[tuple[Tensor, float]]:
        """For each global minibatch (global row indices), this rank's rows of it (indices
        into its part) and its `share`: world size × its rows' weight / the minibatch's,
        where `weights` [n_rank] is what each of this rank's rows counts for in the loss's
        mean (1 per row, its tokens, its pair weight). A rank without rows in a minibatch
        gets one of its rows with share 0, so every rank runs every step's collectives."""
        if self.world_size == 1:
            for rows in splits:
                yield rows, 1.0
            return
        every = self.gather_rows(weights.detach().double()).cpu()
        own = self.part(len(every))
        for rows in splits:
            mine = rows[(rows >= own.start) & (rows < own.stop)]
            if len(mine) == 0:
                yield torch.zeros(1, dtype=rows.dtype), 0.0
                continue
            total = every[rows].sum().clamp(min=1e-8)
            yield mine - own.start, (self.world_size * every[mine].sum() / total).item()

    def sync_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over ranks, in one all-reduce per dtype (a parameter
        without a gradient counts as zeros)."""
        if self.world_size == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for param in params:
            by_dtype.setdefault(param.dtype, []).append(param)
        for group in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                              for p in group])
            dist.all_reduce(flat)
            flat /= self.world_size
            for param, grad in zip(group, flat.split([p.numel() for p in group]), strict=True):
                param.grad = grad.view_as(param).clone()

    def sync_parameters(self, params: Sequence[Tensor]) -> None:
        """Rank 0's values of `params` on every rank (a start every rank shares)."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for param in params:
                dist.broadcast(param.data, src=0)

    def sampling_generator(self, generator: torch.Generator, step: int) -> torch.Generator:
        """The generator a rank samples its part of step `step`'s answers with: `generator`
        itself on one process; on several, one seeded from (its seed, step, rank), so that a
        resumed run draws the same answers without any other rank's state."""
        if self.world_size == 1:
            return generator
        seed = hash((generator.initial_seed(), step, self.rank)) % 2**63
        return torch.Generator(generator.device).manual_seed(seed)


ONE_PROCESS = DataParallel()


def data_parallel() -> DataParallel:
    """This process's place: rank 0 of 1, unless it belongs to a process group."""
    if dist.is_available() and dist.is_initialized():
        return DataParallel(dist.get_rank(), dist.get_world_size())
    return ONE_PROCESS


def on_main(dp: DataParallel, work: Callable[[], Any]) -> Any:
    """`work()` on rank 0 alone (reading the store, say), its result on every rank. An
    error there is raised there; the other ranks end quietly, with exit code 0, so that
    torchrun waits for rank 0 to say what went wrong and ends with its exit code."""
    result = error = None
    if dp.is_main:
        try:
            result = work()
        except Exception as e:
            error = e
    result, failed = dp.broadcast((result, error is not None))
    if error is not None:
        raise error
    if failed:
        raise SystemExit(0)
    return result


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or `accelerate launch`) among several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> tuple[DataParallel, str | None]:
    """Join the process group when started by torchrun; (this process's place, its device:
    "cuda:LOCAL_RANK" on GPUs, None for the default)."""
    if not under_torchrun():
        return DataParallel(), None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU, NCCL on GPU
    device = str(state.device) if state.device.type == "cuda" else None
    return DataParallel(state.process_index, state.num_processes), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
