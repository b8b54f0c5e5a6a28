"""Training data for the reward model and PPO, from the feedback store or a data file.

From the store (DESIGN §3):

* side-by-side choices: the pick beats the other answer; a tie says neither is better
  (no pair); "both bad" makes both answers bad labels;
* rankings of k answers: all k·(k−1)/2 pairs, better before worse;
* thumbs: on answers to the same prompt, every up-voted answer beats every down-voted one
  (votes on one answer are summed first); each thumb is also a pointwise label;
* rewrites: the user's rewrite beats the answer it rewrites;
* flags: a flagged answer is a bad label, from the moment it is flagged, as a thumbs-down
  is (an operator's dismissal of the flag takes it back).

What operators left out in the review queue (`feedback.queries.exclusions`: dismissed
flags and rewrites, excluded messages, votes and users, redacted texts) makes no pair,
label or PPO prompt; with `approved_rewrites_only` (`FLYWHEEL_REVIEW_REWRITES=1`) a
rewrite counts only once an operator accepted it.

Each pair and label is weighted by its kind (`SOURCE_WEIGHTS`: pairs inferred from
separate thumbs count half) times its user's annotator weight
(`feedback.queries.annotators`): 1 for an honest user as good as the crowd's median,
down to 0.1 for a careless pattern (always A, always up, ...), random clicks, or votes
that disagree with the reward model and the consensus (an adversary).

Votes of judges (AI feedback: users with role `judge`) are weighted by the same annotator
quality, and at most `ai_feedback_max_share` of the pairs (and of the labels) come from
them; the rest are dropped at random.

Pairs and labels are deduplicated (of duplicates, the heaviest is kept), one user's share
of them is capped, and they are split into train and held-out by conversation, so no
conversation sits on both sides.
The split hashes the conversation id with the seed: a conversation held out once stays
held out as the store grows, which keeps the validation set fixed between retrains.
"""

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations, islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from feedback.db import session_scope
from feedback.formats import Preference, read_records
from feedback.models import Choice, Message, MessageRole
from feedback.queries.annotators import annotator_weights
from feedback.queries.conversations import message_paths, user_message_ids
from feedback.queries.exclusions import training_filter
from feedback.queries.judging import judge_ids
from feedback.queries.votes import iter_comparisons, iter_flags, iter_ratings, iter_rewrites
from trainer.configs import DEFAULT_HELDOUT_FRACTION, DEFAULT_MAX_USER_SHARE

Messages = list[dict[str, str]]
BATCH = 500  # messages per path lookup
# Pairs inferred from separate thumbs are weaker evidence than a direct comparison.
SOURCE_WEIGHTS = {"choice": 1.0, "ranking": 1.0, "rewrite": 1.0, "thumbs": 0.5, "file": 1.0,
                  "labels": 0.5}
DEFAULT_AI_FEEDBACK_MAX_SHARE = 0.25

T = TypeVar("T", "Pair", "Label")


@dataclass(frozen=True)
class Pair:
    """A prompt (messages ending with a user turn) and two answers, the better one first."""

    prompt: Messages
    chosen: str
    rejected: str
    weight: float = 1.0
    source: str = "file"  # choice, ranking, thumbs, rewrite, file or labels
    conversation_id: int | str | None = None  # what the held-out split groups by
    user_id: int | None = None  # who gave the feedback (for the per-user cap)

    @property
    def key(self) -> tuple:
        return _prompt_key(self.prompt), self.chosen, self.rejected


@dataclass(frozen=True)
class Label:
    """A prompt, one answer and whether it is good (a thumb, a flag, a "both bad")."""

    prompt: Messages
    completion: str
    label: bool
    weight: float = 1.0
    source: str = "file"  # thumb, flag, both_bad or file
    conversation_id: int | str | None = None
    user_id: int | None = None

    @property
    def key(self) -> tuple:
        return _prompt_key(self.prompt), self.completion, self.label, self.user_id


@dataclass
class PreferenceSplit:
    """Pairs and labels, split by conversation. `stats` counts what was made and dropped."""

    train: list[Pair] = field(default_factory=list)
    heldout: list[Pair] = field(default_factory=list)
    train_labels: list[Label] = field(default_factory=list)
    heldout_labels: list[Label] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


# -- prompts for PPO -------------------------------------------------------------------


def user_prompts(engine: Engine, *, limit: int | None = None, seed: int = 0) -> list[Messages]:
    """Real user turns from the store, each as the thread up to and including it (role /
    content dicts), deduplicated by content, in a seeded random order."""
    with session_scope(engine) as session:
        kept = training_filter(session)
        ids = [i for i in user_message_ids(session) if kept.keeps_message(i)]
        random.Random(seed).shuffle(ids)
        prompts: list[Messages] = []
        seen: set[tuple] = set()
        for chunk in _batches(ids, BATCH):
            paths = message_paths(session, message_ids=chunk)
            for message_id in chunk:
                prompt = _messages(paths.get(message_id, []))
                key = _prompt_key(prompt)
                if prompt and key not in seen:
                    seen.add(key)
                    prompts.append(prompt)
                    if limit is not None and len(prompts) >= limit:
                        return prompts
    return prompts


# -- pairs and labels from the store ---------------------------------------------------


def preference_pairs(engine: Engine, *, max_user_share: float = DEFAULT_MAX_USER_SHARE,
                     heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
                     approved_rewrites_only: bool = False,
                     seed: int = 0, annotator_weighting: bool = True,
                     ai_feedback_max_share: float = DEFAULT_AI_FEEDBACK_MAX_SHARE,
                     ) -> PreferenceSplit:
    """Every pair and label the store's feedback yields, weighted by annotator quality
    (unless `annotator_weighting` is off), capped and split (module doc)."""
    if engine.dialect.name == "postgresql":  # one snapshot, even while the server writes
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with session_scope(engine) as session:
        pairs, labels, stats = store_feedback(session,
                                              approved_rewrites_only=approved_rewrites_only)
        if annotator_weighting:
            weights = annotator_weights(session)
            pairs = [_reweighted(p, weights, stats) for p in pairs]
            labels = [_reweighted(x, weights, stats) for x in labels]
        judges = judge_ids(session)
    pairs = cap_ai_share(pairs, judges, ai_feedback_max_share, seed=seed, stats=stats)
    labels = cap_ai_share(labels, judges, ai_feedback_max_share, seed=seed, stats=stats)
    return split(pairs, labels, max_user_share=max_user_share,
                 heldout_fraction=heldout_fraction, seed=seed, stats=stats)


def store_feedback(session: Session, *, approved_rewrites_only: bool = False
                   ) -> tuple[list[Pair], list[Label], dict[str, int]]:
    """Every pair and label of the store, one per vote not left out (module doc; not yet
    deduplicated, capped or weighted by annotator), and counts of what made none (ties,
    both bad)."""
    kept = training_filter(session, approved_rewrites_only=approved_rewrites_only)
    comparisons = list(filter(kept.keeps_comparison,
                              iter_comparisons(session, decided_only=True)))
    ratings = list(filter(kept.keeps_rating, iter_ratings(session)))
    rewrites = list(filter(kept.keeps_rewrite, iter_rewrites(session)))
    flags = list(filter(kept.keeps_flag, iter_flags(session)))
    ids = {m for c in comparisons for m in c.candidate_ids}
    ids |= {r.message_id for r in ratings} | {r.message_id for r in rewrites}
    ids |= {f.message_id for f in flags}
    paths: dict[int, list[Message]] = {}
    for chunk in _batches(sorted(ids), BATCH):
        paths.update(message_paths(session, message_ids=chunk))
    stats: dict[str, int] = defaultdict(int)
    pairs: list[Pair] = []
    labels: list[Label] = []

    def answers_user(message_id: int) -> bool:
        path = paths.get(message_id, [])
        return len(path) >= 2 and path[-2].role == MessageRole.user

    def pair(winner: int, loser: int, source: str, user_id: int) -> None:
        if answers_user(winner) and answers_user(loser):
            pairs.append(_pair(paths[winner], paths[loser][-1].content, source, user_id))

    def label(message_id: int, good: bool, source: str, user_id: int) -> None:
        if answers_user(message_id):
            path = paths[message_id]
            labels.append(Label(_messages(path[:-1]), path[-1].content, good, 1.0, source,
                                path[-1].conversation_id, user_id))

    for c in comparisons:
        if c.ranking:
            for winner, loser in combinations(c.ranking, 2):
                pair(winner, loser, "ranking", c.user_id)
        elif c.choice in (Choice.a, Choice.b):
            first, second = c.candidate_ids[:2]
            winner, loser = (first, second) if c.choice == Choice.a else (second, first)
            pair(winner, loser, "choice", c.user_id)
        elif c.choice == Choice.tie:
            stats["ties"] += 1
        elif c.choice == Choice.both_bad:
            stats["both_bad"] += 1
            for message_id in c.candidate_ids:
                label(message_id, False, "both_bad", c.user_id)
    votes: dict[int, int] = defaultdict(int)  # message -> sum of thumbs
    voter: dict[int, int] = {}
    for r in ratings:
        votes[r.message_id] += r.thumb
        voter.setdefault(r.message_id, r.user_id)
        label(r.message_id, r.thumb > 0, "thumb", r.user_id)
    siblings: dict[int | None, list[int]] = defaultdict(list)  # prompt -> rated answers
    for message_id, total in votes.items():
        if total and answers_user(message_id):
            siblings[paths[message_id][-1].parent_id].append(message_id)
    for answers in siblings.values():
        for up in (m for m in answers if votes[m] > 0):
            for down in (m for m in answers if votes[m] < 0):
                pair(up, down, "thumbs", voter[up])
    for r in rewrites:
        if answers_user(r.message_id):
            original = paths[r.message_id]
            pairs.append(_pair(original, original[-1].content, "rewrite", r.user_id,
                               chosen=r.content))
    for f in flags:
        label(f.message_id, False, "flag", f.user_id)
    return pairs, labels, stats


def _reweighted(item: T, weights: dict[int, float], stats: dict[str, int]) -> T:
    weight = weights.get(item.user_id, 1.0) if item.user_id is not None else 1.0
    if weight >= 1.0:
        return item
    stats["downweighted"] += 1
    return replace(item, weight=item.weight * weight)


def _pair(path: list[Message], rejected: str, source: str, user_id: int, *,
          chosen: str | None = None) -> Pair:
    """The pair whose prompt is the thread above `path[-1]`; by default `path[-1]` wins."""
    winner = path[-1]
    return Pair(_messages(path[:-1]), winner.content if chosen is None else chosen, rejected,
                SOURCE_WEIGHTS[source], source, winner.conversation_id, user_id)


# -- pairs and labels from a data file -------------------------------------------------


def pairs_from_file(path: str | Path, *, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
                    seed: int = 0, max_user_share: float | None = None) -> PreferenceSplit:
    """The pairs and labels of a preference file (DESIGN §4; `feedback.formats`). Records
    are grouped for the split by their first user turn, so the branches of one
    conversation stay on one side. Unpaired records with the same prompt also make pairs
    (good beats bad)."""
    pairs: list[Pair] = []
    labels: list[Label] = []
    for record in read_records(path):
        prompt = [{"role": t.role, "content": t.content} for t in record.prompt]
        group = _digest(next(m["content"] for m in prompt if m["role"] == "user"))
        if isinstance(record, Preference):
            pairs.append(Pair(prompt, record.chosen, record.rejected, 1.0, "file", group))
        else:
            labels.append(Label(prompt, record.completion, record.label, 1.0, "file", group))
    pairs += _pairs_from_labels(labels)
    return split(pairs, labels, max_user_share=max_user_share,
                 heldout_fraction=heldout_fraction, seed=seed)


def _pairs_from_labels(labels: Sequence[Label]) -> list[Pair]:
    by_prompt: dict[tuple, list[Label]] = defaultdict(list)
    for item in labels:
        by_prompt[_prompt_key(item.prompt)].append(item)
    return [Pair(good.prompt, good.completion, bad.completion, SOURCE_WEIGHTS["labels"],
                 "labels", good.conversation_id)
            for group in by_prompt.values()
            for good in group if good.label
            for bad in group if not bad.label and bad.completion != good.completion]


# -- dedupe, cap, split ----------------------------------------------------------------


def split(pairs: Iterable[Pair], labels: Iterable[Label] = (), *,
          max_user_share: float | None = DEFAULT_MAX_USER_SHARE,
          heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, seed: int = 0,
          stats: dict[str, int] | None = None) -> PreferenceSplit:
    """Deduplicate, cap each user's share, and split by conversation."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), not {heldout_fraction}")
    stats = defaultdict(int, stats or {})
    pairs = _dedupe([p for p in pairs if p.chosen != p.rejected], stats, "pairs")
    labels = _dedupe(labels, stats, "labels")
    pairs = cap_user_share(pairs, max_user_share, seed=seed, stats=stats)
    labels = cap_user_share(labels, max_user_share, seed=seed, stats=stats)
    result = PreferenceSplit(stats=stats)
    for p in pairs:
        held = _held_out(p.conversation_id, heldout_fraction, seed)
        (result.heldout if held else result.train).append(p)
    for item in labels:
        held = _held_out(item.conversation_id, heldout_fraction, seed)
        (result.heldout_labels if held else result.train_labels).append(item)
    stats.update(train_pairs=len(result.train), heldout_pairs=len(result.heldout),
                 train_labels=len(result.train_labels),
                 heldout_labels=len(result.heldout_labels))
    result.stats = dict(stats)
    return result


def _dedupe(items: Iterable[T], stats: dict[str, int], what: str) -> list[T]:
    """The first of each duplicate's place, holding the heaviest of them."""
    kept: dict[tuple, T] = {}
    for item in items:
        if item.key in kept:
            stats[f"duplicate_{what}"] += 1
            if item.weight > kept[item.key].weight:
                kept[item.key] = item
        else:
            kept[item.key] = item
    return list(kept.values())


def cap_user_share(items: Sequence[T], max_share: float | None, *, seed: int = 0,
                   stats: dict[str, int] | None = None) -> list[T]:
    """Drop (at random) items of the users above `max_share` of what is kept, so no one
    user steers the reward model. With fewer than 1/max_share users the cap is an equal
    share each. Items without a user are never dropped. Order is kept."""
    by_user: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        if item.user_id is not None:
            by_user[item.user_id].append(index)
    if not max_share or len(by_user) < 2:
        return list(items)
    share = max(max_share, 1.0 / len(by_user))
    free = len(items) - sum(len(v) for v in by_user.values())
    counts = sorted(len(v) for v in by_user.values())
    # The largest per-user cap c with c <= share · (free + Σ min(n_u, c)).
    low, high = 1, counts[-1]
    while low < high:
        c = (low + high + 1) // 2
        if c <= share * (free + sum(min(n, c) for n in counts)):
            low = c
        else:
            high = c - 1
    rng = random.Random(seed)
    dropped: set[int] = set()
    for indices in by_user.values():
        if len(indices) > low:
            dropped.update(rng.sample(indices, len(indices) - low))
    if stats is not None:
        stats["capped"] = stats.get("capped", 0) + len(dropped)
    return [item for index, item in enumerate(items) if index not in dropped]


def cap_ai_share(items: Sequence[T], judges: set[int], max_share: float, *, seed: int = 0,
                 stats: dict[str, int] | None = None) -> list[T]:
    """Drop (at random) judges' items beyond `max_share` of what is kept. Order is kept."""
    ai = [i for i, item in enumerate(items) if item.user_id in judges]
    people = len(items) - len(ai)
    allowed = len(ai) if max_share >= 1.0 else int(max_share / (1.0 - max_share) * people)
    if len(ai) <= allowed:
        return list(items)
    dropped = set(random.Random(seed).sample(ai, len(ai) - allowed))
    if stats is not None:
        stats["ai_feedback_capped"] = stats.get("ai_feedback_capped", 0) + len(dropped)
    return [item for index, item in enumerate(items) if index not in dropped]


def _held_out(conversation_id: int | str | None, fraction: float, seed: int) -> bool:
    if not fraction or conversation_id is None:
        return False
    return int(_digest(f"{seed}:{conversation_id}")[:8], 16) / 2**32 < fraction


# -- helpers ---------------------------------------------------------------------------


def _messages(path: Iterable[Message]) -> Messages:
    return [{"role": m.role, "content": m.content} for m in path]


def _prompt_key(prompt: Messages) -> tuple:
    return tuple((m["role"], m["content"]) for m in prompt)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _batches(items: Sequence[int], size: int) -> Iterable[list[int]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
