"""A preference for the crowd tests: fewer words is better; every disliked answer has a
rewrite and every answer with more than three words gets a flag, so every kind of vote
shows up even with the demo model's short answers."""


def fussy(prompt: str, answer: str) -> float:
    return -float(len(answer.split()))


def fussy_rewrite(prompt: str, answer: str) -> str | None:
    return "Short."


def fussy_flag(prompt: str, answer: str) -> str | None:
    return "other" if len(answer.split()) > 3 else None
