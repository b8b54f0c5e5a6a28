"""API keys: random, shown once, stored only as a SHA-256 hash."""

import hashlib
import secrets

PREFIX = "fw-"


def new_api_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Keys carry 256 random bits, so an unsalted hash is safe and can be looked up."""
    return hashlib.sha256(key.encode()).hexdigest()
