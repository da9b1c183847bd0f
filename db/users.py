"""Users, roles and passwords (hashlib.scrypt with a random salt per user).

Roles grow: an agent compares and flags; a reviewer also approves and corrects; ops also exports
and runs batches. :func:`authorize` is what handlers call before acting; a refusal is audited.
Passwords follow a policy (:func:`password_problem`: length, not a common password, not the user
name). Failed-login counters (``login_attempts``) are stored here; when they lock a login out is the
use case's decision (``app.services.auth``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from sqlmodel import Session, select

from db.audit import audit
from db.models import LOGIN_KINDS, ROLES, LoginAttempt, User

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50 ms per check: slow for guessers
SALT_BYTES = 16
MIN_PASSWORD_CHARS = 10
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
_SUFFIX_CHARS = "0123456789!@#$%^&*()-_=+.,;:?~ "  # "password2024!" is "password" with a suffix

# What each action needs; roles are ordered agent < reviewer < ops.
PERMISSIONS: dict[str, str] = {
    "compare": "agent",
    "flag": "agent",
    "approve": "reviewer",
    "correct": "reviewer",
    "export": "ops",
    "batch": "ops",
    "configure_reviews": "ops",  # second-opinion share, adjudication
    "retrain": "ops",  # start/cancel a retraining job (db.jobs)
    "promote": "ops",  # promote or roll back an adapter version (db.versions)
}


class PermissionDenied(PermissionError):
    """The user's role does not allow the action."""

    def __init__(self, username: str, role: str | None, action: str):
        self.username, self.role, self.action = username, role, action
        need = PERMISSIONS.get(action, "?")
        super().__init__(
            f"user {username!r} (role {role or 'unknown'}) may not {action}: needs role {need} or above"
        )


class UserError(ValueError):
    """A user could not be created; the message names the field (username, role, password)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex`` for ``password`` with a fresh random salt."""
    salt = salt or secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower-cased), read once."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(username: str, password: str) -> str | None:
    """Why ``password`` may not be ``username``'s password, or None when it may.

    At least :data:`MIN_PASSWORD_CHARS` characters; not on the common-passwords list and not the user
    name, also once a trailing run of digits and punctuation is removed (``Password2024!``), case
    ignored.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        return f"at least {MIN_PASSWORD_CHARS} characters"
    lowered = password.lower()
    forms = {lowered, lowered.rstrip(_SUFFIX_CHARS)}
    if username.strip().lower() in forms:
        return "must not be the user name"
    if forms & common_passwords():
        return "too common (on the list of leaked passwords); choose another"
    return None


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(digest.hex(), hash_hex)


def create_user(session: Session, username: str, role: str, password: str, actor: str = "system") -> User:
    """Add a user. Raises :class:`UserError` for a taken name, an unknown role or a password the policy
    refuses (:func:`password_problem`)."""
    username = username.strip()
    if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError("username: use letters, digits, '-', '_' or '.'")
    if role not in ROLES:
        raise UserError(f"role: must be one of {', '.join(ROLES)} (got {role!r})")
    problem = password_problem(username, password)
    if problem:
        raise UserError(f"password: {problem}")
    if session.get(User, username) is not None:
        raise UserError(f"username: {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    audit(session, actor, "create_user", "user", username, None, user)
    return user


@cache
def _dummy_hash() -> str:
    """A scrypt hash of a random password, checked for unknown user names (made once, ~50 ms)."""
    return hash_password(secrets.token_urlsafe(16))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user when the password matches, else None.

    An unknown user name costs a scrypt check too (against a dummy hash), so the time of the answer
    does not tell which user names exist.
    """
    user = session.get(User, username)
    stored = user.password_hash if user is not None else _dummy_hash()
    matches = verify_password(password, stored)
    return user if user is not None and matches else None


def login_attempt(session: Session, kind: str, subject: str) -> LoginAttempt | None:
    """The failed-login counter of a user name or address (``kind`` in LOGIN_KINDS), if any."""
    return session.get(LoginAttempt, (kind, subject))


def save_login_failure(
    session: Session, kind: str, subject: str, failures: int, at: datetime, locked_until: datetime | None
) -> LoginAttempt:
    """Set the failed-login counter of ``subject``. The caller audits the attempt itself
    (``login_failed``), once for the user name and the address together."""
    if kind not in LOGIN_KINDS:
        raise ValueError(f"kind: one of {', '.join(LOGIN_KINDS)} (got {kind!r})")
    row = login_attempt(session, kind, subject) or LoginAttempt(kind=kind, subject=subject)
    row.failures, row.last_failure_at, row.locked_until = failures, at, locked_until
    session.add(row)
    session.flush()
    return row


def clear_login_failures(session: Session, kind: str, subject: str) -> bool:
    """Forget the failed logins of ``subject`` (after a successful login); True when there were some."""
    row = login_attempt(session, kind, subject)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def role_allows(role: str | None, action: str) -> bool:
    need = PERMISSIONS[action]
    return role in ROLES and ROLES.index(role) >= ROLES.index(need)


def role_of_user(session: Session, username: str | None) -> str | None:
    user = session.get(User, username) if username else None
    return user.role if user else None


def authorize(session: Session, username: str | None, action: str) -> str:
    """The user's role when it allows ``action``; else audits the refusal, raises :class:`PermissionDenied`.

    The refusal's audit entry is committed at once, so it survives the caller's error handling.
    """
    role = role_of_user(session, username)
    if role_allows(role, action):
        return role  # type: ignore[return-value]
    audit(
        session,
        username or "anonymous",
        "denied",
        "permission",
        action,
        None,
        {"action": action, "role": role},
    )
    session.commit()
    raise PermissionDenied(username or "anonymous", role, action)


@dataclass(frozen=True)
class Bootstrap:
    """What :func:`ensure_admin` did: the user it created, and the password when it generated one."""

    username: str
    generated_password: str | None


def ensure_admin(
    session: Session, username: str | None = None, password: str | None = None
) -> Bootstrap | None:
    """On first start (no users), create an ops user; with no password given, generate one.

    Returns None when users already exist. The caller prints a generated password once.
    """
    if session.exec(select(User).limit(1)).first() is not None:
        return None
    generated = None if password else secrets.token_urlsafe(12)
    create_user(session, username or "admin", "ops", password or generated, actor="system")  # type: ignore[arg-type]
    return Bootstrap(username or "admin", generated)
