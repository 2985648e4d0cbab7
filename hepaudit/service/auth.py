"""Tokens, users and who may see what.

A token is 32 random bytes (URL-safe text) shown once when it is created; the database keeps
only its SHA-256, which is enough for a secret of that entropy (no salt or slow hash needed:
nothing to guess). A user belongs to one group; an admin sees every group.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepaudit.service.db import User

TOKEN_PREFIX = "hpa_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: str, group: str, admin: bool = False) -> str:
    """A new token for ``user`` in ``group`` (the only time it is seen in clear)."""
    if not user.strip() or not group.strip():
        raise ValueError("a token needs a user name and a group")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(User(name=user.strip(), group_name=group.strip(), admin=admin, token_hash=hash_token(token)))
    session.commit()
    return token


def revoke(session: Session, user: str, group: str | None = None) -> int:
    """Remove every token of ``user`` (in ``group`` only, when given); how many were removed."""
    query = select(User).where(User.name == user)
    if group is not None:
        query = query.where(User.group_name == group)
    rows = session.execute(query).scalars().all()
    for row in rows:
        session.delete(row)
    session.commit()
    return len(rows)


def user_for(session: Session, token: str | None) -> User | None:
    """The user holding ``token``, or None for a missing or unknown one."""
    if not token:
        return None
    found: User | None = session.execute(select(User).where(User.token_hash == hash_token(token))).scalar_one_or_none()
    if found is None or not hmac.compare_digest(found.token_hash, hash_token(token)):
        return None
    return found


def may_see(user: User, row: Any) -> bool:
    """Whether ``user`` may see a model or audit (its ``group_name``)."""
    return bool(user.admin or row.group_name == user.group_name)
