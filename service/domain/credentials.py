"""API keys as values: a fresh key is shown once; only its hash is stored and compared."""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "okr_"


def new_api_key() -> tuple[str, str]:
    """A fresh key (shown once) and the hash that is stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
