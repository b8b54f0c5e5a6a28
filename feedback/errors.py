"""Errors raised by the feedback store, worded for the person who can fix them."""


class StoreError(Exception):
    """The store cannot be reached or used (bad URL, unreachable server, …)."""


class NotFound(LookupError):
    """The record does not exist, or does not belong to the caller."""


class InvalidFeedback(ValueError):
    """A vote or record that breaks a rule (wrong role, unknown choice, foreign message…)."""


class RegistryError(InvalidFeedback):
    """A rule of the adapter registry or the training-run log was broken (unknown status or
    kind, duplicate version, illegal status change, finishing a run twice…)."""
