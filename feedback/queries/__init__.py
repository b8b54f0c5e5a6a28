"""Keyword-only query functions: the only place that builds SQL for the feedback store.

Every function takes the caller's `Session` first and commits nothing: the caller's
unit of work (`feedback.db.session_scope`) decides when to commit.
"""
