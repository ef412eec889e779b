"""API keys: created and revoked by admins, stored as SHA-256 hashes in the registry database.

A key reads `tg_<key id>_<secret>`. The key id is public (it names the key in lists, logs and
rate-limit buckets); the secret is 256 random bits, so a fast hash is the right one (no
password stretching needed) and only the hash is kept. A key is shown once, when created.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.errors import Unauthorized
from gateway.identity.tokens import parse_scopes
from registry.db import RegistryDatabase, reading, writing
from registry.tables import ApiKey, utcnow

PREFIX = "tg"


@dataclass(frozen=True)
class KeyLimits:
    requests_capacity: int | None = None
    requests_per_s: float | None = None
    tokens_capacity: int | None = None
    tokens_per_s: float | None = None


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: frozenset[str]
    limits: KeyLimits
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyNotFound(LookupError):
    pass


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        limits=KeyLimits(
            row.requests_capacity, row.requests_per_s, row.tokens_capacity, row.tokens_per_s
        ),
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_key(
    *, db: RegistryDatabase, name: str, scopes: str, actor: str, limits: KeyLimits | None = None
) -> tuple[str, KeyInfo]:
    """A new key (the only time its secret exists in clear) and what is stored about it."""
    parsed = parse_scopes(scopes)
    if not parsed:
        raise ValueError("a key needs at least one scope")
    if not name.strip():
        raise ValueError("a key needs a name")
    limits = limits or KeyLimits()
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with writing(db) as session:
        row = ApiKey(
            key_id=key_id,
            name=name.strip(),
            secret_sha256=_digest(secret),
            scopes=" ".join(sorted(parsed)),
            requests_capacity=limits.requests_capacity,
            requests_per_s=limits.requests_per_s,
            tokens_capacity=limits.tokens_capacity,
            tokens_per_s=limits.tokens_per_s,
            created_by=actor,
            created_at=utcnow(),
            revoked_by="",
        )
        session.add(row)
        session.flush()
        info = _info(row)
    return f"{PREFIX}_{key_id}_{secret}", info


def list_keys(*, db: RegistryDatabase, include_revoked: bool = False) -> list[KeyInfo]:
    with reading(db) as session:
        query = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        return [_info(row) for row in session.scalars(query)]


def get_key(*, db: RegistryDatabase, key_id: str) -> KeyInfo:
    with reading(db) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None:
            raise KeyNotFound(f"no API key '{key_id}'")
        return _info(row)


async def active_key(*, db: RegistryDatabase, key_id: str) -> KeyInfo:
    """The key, read from the database (so a revocation counts at once on every replica);
    Unauthorized (401) when it is unknown or revoked."""
    try:
        info = await asyncio.to_thread(get_key, db=db, key_id=key_id)
    except KeyNotFound as exc:
        raise Unauthorized("the token names an unknown API key", code="key_unknown") from exc
    if not info.active:
        raise Unauthorized("this API key has been revoked", code="key_revoked")
    return info


def revoke_key(*, db: RegistryDatabase, key_id: str, actor: str) -> KeyInfo:
    """Revoke a key (idempotent); tokens it was exchanged for stop working at once."""
    with writing(db) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id).with_for_update())
        if row is None:
            raise KeyNotFound(f"no API key '{key_id}'")
        if row.revoked_at is None:
            row.revoked_at, row.revoked_by = utcnow(), actor
        session.flush()
        return _info(row)


def authenticate_key(*, db: RegistryDatabase, presented: str) -> KeyInfo | None:
    """The active key a presented `tg_<id>_<secret>` string names, or None."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    key_id, secret = parts[1], parts[2]
    with reading(db) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
            return None
        return _info(row)
