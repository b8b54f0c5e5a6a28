"""A local Hugging Face model as judge, by the log-probabilities of its verdicts.

The model gets the rubric's messages through its chat template and, instead of
generating, is asked how likely each verdict is as its first token: "A" against "B" for
a pair, "good" against "bad" for one answer (each word's likeliest spellings summed).
Within `tie_margin` nats of each other, a pair is a tie. It never fails to parse.
"""

import torch

from flywheel.generation import chat_ids
from flywheel.judge.rubric import Rubric
from flywheel.judge.verdicts import Reply, Verdict

SPELLINGS = {Verdict.a: ("A", " A", "a"), Verdict.b: ("B", " B", "b"),
             Verdict.good: ("good", " good", "Good"), Verdict.bad: ("bad", " bad", "Bad")}


class LogprobJudge:
    """Judges with `model` and `tokenizer` (as `flywheel.model_loading.load_model` gives)."""

    def __init__(self, model, tokenizer, *, rubric: Rubric, name: str = "local",
                 tie_margin: float = 0.0) -> None:
        self.model, self.tokenizer, self.rubric = model, tokenizer, rubric
        self.name, self.tie_margin = name, tie_margin
        self.tokens = {v: sorted({ids[0] for s in spellings
                                  if (ids := tokenizer.encode(s, add_special_tokens=False))})
                       for v, spellings in SPELLINGS.items()}

    def ask_pair(self, prompt: str, first: str, second: str) -> Reply:
        return self._ask(self.rubric.pair_messages(prompt, first, second),
                         Verdict.a, Verdict.b, tie=True)

    def ask_single(self, prompt: str, answer: str) -> Reply:
        return self._ask(self.rubric.single_messages(prompt, answer),
                         Verdict.good, Verdict.bad, tie=False)

    @torch.no_grad()
    def _ask(self, messages: list[dict[str, str]], yes: Verdict, no: Verdict, *,
             tie: bool) -> Reply:
        ids = chat_ids(self.tokenizer, messages)
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=torch.tensor([list(ids)], device=device)).logits[0, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        score = {v: torch.logsumexp(logprobs[self.tokens[v]], dim=0).item() for v in (yes, no)}
        margin = score[yes] - score[no]
        verdict = Verdict.tie if tie and abs(margin) <= self.tie_margin else \
            (yes if margin > 0 else no)
        return Reply(verdict, f"{yes}: {score[yes]:.3f}, {no}: {score[no]:.3f}", len(ids), 0)
