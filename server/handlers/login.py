"""LOGIN: limits, password check off the reactor, then the session bundle and backlog.

One answer for an unknown user and a wrong password, and the same scrypt work for
both (a dummy hash with the configured cost), so neither the reply nor its timing
tells which names exist.

Limits (docs/security.md, "Hostile load"):
- every failure is counted *before* the hash runs (and taken back on success), so
  pipelined guesses cannot slip past a lock while their hashes are computed; the
  count and the lock check happen when the hash's turn comes in the address's queue,
  so honest logins waiting behind each other never count against their address;
- an address has at most a few hashes in flight (`server.hash_queue`);
- locks are per (account, address). An address the account has logged in from
  before is judged on that pair alone, so a stranger's guesses from elsewhere never
  lock the owner out of their usual place; other addresses are also judged on the
  account's "strangers" counter and on their own address counter;
- every key is folded by `common.names.canonical`, exactly as the database folds
  usernames.
"""

from __future__ import annotations

import base64
import math
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.crypto.passwords import SALT_SIZE, verify_password
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import presence
from server.handlers._backlog import push_backlog
from server.handlers._common import USERNAME_MAX
from server.handlers._params import get_str
from server.handlers._wire import contact_lists
from server.storage import login_addresses, login_attempts, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LOGIN
REQUIRES_AUTH = False
PASSWORD_MAX = 1024
LOGIN_FAILED = "wrong username or password"


def dummy_hash(scrypt_n: int) -> str:
    """A well-formed hash nobody's password matches, costing what a real one costs."""
    salt = base64.b64encode(bytes(SALT_SIZE)).decode("ascii")
    digest = base64.b64encode(bytes(32)).decode("ascii")
    return f"scrypt${scrypt_n}$8$1${salt}${digest}"


ADDRESS_FAILURE_FACTOR = 4  # one address can be a whole office behind NAT


def backoff_policy(ctx: Context, factor: int = 1) -> login_attempts.BackoffPolicy:
    """An account's policy; an address's own counter gets `factor` times the room."""
    return login_attempts.BackoffPolicy(
        max_failures=ctx.config.login_max_failures * factor,
        base_seconds=ctx.config.login_backoff_base,
        max_seconds=ctx.config.login_backoff_max,
    )


@dataclass(frozen=True)
class Keys:
    """The counters one login attempt is judged on (and counted against)."""

    pair: str
    account: str | None  # None for an address the account already knows
    address: str | None

    @property
    def wider(self) -> list[str]:
        return [key for key in (self.account, self.address) if key is not None]

    @property
    def all(self) -> list[str]:
        return [self.pair, *self.wider]


def attempt_keys(ctx: Context, name: str, user: users.User | None) -> Keys:
    ip = ctx.peer[0]
    pair = login_attempts.pair_key(name, ip)
    if user is not None and login_addresses.is_known(ctx.db, user.id, ip):
        return Keys(pair, None, None)
    return Keys(pair, login_attempts.user_key(name), login_attempts.address_key(ip))


@dataclass
class _Attempt:
    """What `admit` decided when this login's turn came, for the hash and its result."""

    stored_hash: str = ""
    user_id: int | None = None
    keys: Keys | None = None


def handle(ctx: Context, params: dict[str, Any]) -> None:
    name = unicodedata.normalize("NFC", get_str(params, "username", max_len=USERNAME_MAX).strip())
    password = get_str(params, "password", max_len=PASSWORD_MAX)
    attempt = _Attempt()

    def admit() -> None:
        """At the hash's turn (not at queue time): check the locks, count the failure."""
        user = users.by_username(ctx.db, name) if name else None
        keys = attempt_keys(ctx, name, user)
        now = ctx.now()
        locked_until = login_attempts.locked_until(ctx.db, keys.all, now)
        if locked_until:
            seconds = max(1, math.ceil((locked_until - now) / 1000))
            raise RequestError(
                "too_many_attempts", f"too many failed logins; try again in {seconds} seconds"
            )
        _count_in_advance(ctx, keys, now)
        attempt.keys = keys
        attempt.user_id = user.id if user is not None else None
        attempt.stored_hash = (
            user.password_hash if user is not None else dummy_hash(ctx.config.scrypt_n)
        )

    def finish(ok: bool) -> None:
        if attempt.keys is None:  # cannot happen: admit runs before the hash
            raise RuntimeError("a login hash finished without its admission")
        _finish(ctx, attempt.user_id if ok else None, attempt.keys)

    ctx.services.hashes.submit(
        ctx, lambda: verify_password(password, attempt.stored_hash), finish, admit=admit
    )


def _count_in_advance(ctx: Context, keys: Keys, now: int) -> None:
    """Count the attempt as failed before the hash runs; success takes it back."""
    login_attempts.record_failure(ctx.db, keys.pair, now, backoff_policy(ctx))
    if keys.account is not None:
        login_attempts.record_failure(ctx.db, keys.account, now, backoff_policy(ctx))
    if keys.address is not None:
        policy = backoff_policy(ctx, ADDRESS_FAILURE_FACTOR)
        login_attempts.record_failure(ctx.db, keys.address, now, policy)


def _finish(ctx: Context, user_id: int | None, keys: Keys) -> None:
    """Runs after the hash check; the failure is already counted everywhere."""
    user = users.by_id(ctx.db, user_id) if user_id is not None else None
    if user is None:
        raise RequestError("login_failed", LOGIN_FAILED)
    own = login_attempts.get(ctx.db, keys.pair)  # this address's failures, this one too
    login_attempts.forgive(ctx.db, keys.wider, own.failures if own is not None else 1)
    login_attempts.reset(ctx.db, [keys.pair])
    ip, port = ctx.peer
    login_addresses.remember(ctx.db, user.id, ip, ctx.now())
    users.record_login(ctx.db, user.id, ip, port, ctx.now())
    ctx.bind_user(user.id, user.username)  # logs "came online" and kicks an older session
    ctx.reply(_bundle(ctx, user))
    presence.announce_online(ctx)
    push_backlog(ctx, user.id, user.username)


def _bundle(ctx: Context, user: users.User) -> dict[str, Any]:
    return {
        "profile": {
            "username": user.username,
            "email": user.email,
            "sex": user.sex,
            "age": user.age,
        },
        "certificate": user.certificate,
        "ca_certificate": ctx.identity.certificate_der,
        "transparency": ctx.transparency.certificate_proof(user.username, user.certificate),
        **contact_lists(ctx, user.id),
        "limits": {
            "max_attachment_size": ctx.config.max_attachment_size,
            "chunk_size": ctx.config.chunk_size,
        },
        "server_time": ctx.now(),
    }
