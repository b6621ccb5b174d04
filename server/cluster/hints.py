"""The hints nodes send each other over the bus, and their wire form (sans-IO).

A hint only says where to look: the database stays the truth. A lost hint delays a
delivery until the next hint, reconnect or periodic sweep; it never loses anything, so
a hint that cannot be decoded is dropped (and logged by the bus), never acted upon.

The `Link*` hints carry a device link between two nodes (`server/cluster/link_routes.py`):
a link is ephemeral state of the opener's node, not stored anywhere, so a lost one
makes that link fail (its time limit ends it) and the users start again.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from server.links import MAX_MESSAGE_SIZE

MAX_HINT_BYTES = 64 * 1024
MAX_USERS_PER_HINT = 10_000
MAX_TEXT = 200
#: Why a link ended: the clients' LINK_CLOSE reasons and the relay's own.
LINK_REASONS = frozenset({"cancelled", "refused", "failed", "done", "peer_gone", "expired"})
_REF = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"[0-9a-f]{64}")


class BadHint(ValueError):
    """Bytes from the bus that are not a hint this node understands."""


@dataclass(frozen=True)
class UserNews:
    """Something new is stored for this user: re-read their backlog cursor."""

    user_id: int


@dataclass(frozen=True)
class UsersNews:
    """Something new is stored for these users, all held by the node it is sent to: what
    the bus sends for the `UserNews` of one batch (one message a node, not one a user)."""

    user_ids: tuple[int, ...]


@dataclass(frozen=True)
class RoomNews:
    """Something new is stored for this room's members (by node `origin`, which has
    pushed it to its own members already)."""

    room_id: int
    origin: str


@dataclass(frozen=True)
class KickSession:
    """The user logged in on node `origin` from `address`: other nodes end their session."""

    user_id: int
    origin: str
    address: str


@dataclass(frozen=True)
class MembershipChanged:
    """Friendships or room membership of these users changed: drop cached copies."""

    user_ids: tuple[int, ...]


@dataclass(frozen=True)
class PresenceChanged:
    """The user came online on, or left, node `node_id`: tell their friends here."""

    user_id: int
    node_id: str
    online: bool


@dataclass(frozen=True)
class NodeDown:
    """A node stopped heartbeating; these users it held are offline now."""

    node_id: str
    user_ids: tuple[int, ...]


@dataclass(frozen=True)
class Relay:
    """A push (already encoded) for these users, held by other nodes: a friend request,
    a contact added or removed, a room membership change. Like every hint it may be
    lost; what it announces is stored, and the client reads it at its next refresh."""

    user_ids: tuple[int, ...]
    body: bytes


@dataclass(frozen=True)
class LinkJoin:
    """Account `account` on node `origin`, at `address`, entered the code whose keyed
    digest is `key`; `ref` names this join, then the link, on both nodes."""

    ref: str
    origin: str
    key: str
    account: str
    address: str


@dataclass(frozen=True)
class LinkJoined:
    """The opener's node `origin` accepted join `ref`; the new computer is at `address`."""

    ref: str
    origin: str
    address: str


@dataclass(frozen=True)
class LinkData:
    """One opaque link message from node `origin`'s end of link `ref` to the other end."""

    ref: str
    origin: str
    data: bytes


@dataclass(frozen=True)
class LinkClosed:
    """Link (or join) `ref` ended, for `reason` (one of `LINK_REASONS`)."""

    ref: str
    reason: str


Hint = (
    UserNews
    | UsersNews
    | RoomNews
    | KickSession
    | MembershipChanged
    | PresenceChanged
    | NodeDown
    | Relay
    | LinkJoin
    | LinkJoined
    | LinkData
    | LinkClosed
)

_TAGS: dict[type, str] = {
    UserNews: "user",
    UsersNews: "news",
    RoomNews: "room",
    KickSession: "kick",
    MembershipChanged: "members",
    PresenceChanged: "presence",
    NodeDown: "down",
    Relay: "relay",
    LinkJoin: "ljoin",
    LinkJoined: "ljoined",
    LinkData: "ldata",
    LinkClosed: "lclosed",
}


def encode(hint: Hint) -> bytes:
    """Compact JSON: {"t": tag, ...fields}."""
    body: dict[str, object] = {"t": _TAGS[type(hint)]}
    if isinstance(hint, UserNews | KickSession):
        body["u"] = hint.user_id
    if isinstance(hint, KickSession):
        body["n"] = hint.origin
        body["a"] = hint.address
    if isinstance(hint, RoomNews):
        body["r"] = hint.room_id
        body["n"] = hint.origin
    if isinstance(hint, PresenceChanged):
        body["u"] = hint.user_id
        body["n"] = hint.node_id
        body["on"] = hint.online
    if isinstance(hint, MembershipChanged | NodeDown | UsersNews):
        body["us"] = list(hint.user_ids)
    if isinstance(hint, NodeDown):
        body["n"] = hint.node_id
    if isinstance(hint, Relay):
        body["us"] = list(hint.user_ids)
        body["b"] = base64.b64encode(hint.body).decode("ascii")
    if isinstance(hint, LinkJoin | LinkJoined | LinkData | LinkClosed):
        body["ref"] = hint.ref
    if isinstance(hint, LinkJoin | LinkJoined | LinkData):
        body["n"] = hint.origin
    if isinstance(hint, LinkJoin):
        body["k"] = hint.key
        body["acc"] = hint.account
    if isinstance(hint, LinkJoin | LinkJoined):
        body["a"] = hint.address
    if isinstance(hint, LinkData):
        body["b"] = base64.b64encode(hint.data).decode("ascii")
    if isinstance(hint, LinkClosed):
        body["why"] = hint.reason
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def _int(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if type(value) is not int or value < 0:
        raise BadHint(f"field {key!r} must be a non-negative integer")
    return value


def _text(body: dict[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadHint(f"field {key!r} must be a short non-empty string")
    return value


def _ids(body: dict[str, object], key: str) -> tuple[int, ...]:
    value = body.get(key)
    if not isinstance(value, list) or len(value) > MAX_USERS_PER_HINT:
        raise BadHint(f"field {key!r} must be a list of at most {MAX_USERS_PER_HINT} ids")
    if any(type(item) is not int or item < 0 for item in value):
        raise BadHint(f"field {key!r} must hold non-negative integers")
    return tuple(value)


def _bytes(body: dict[str, object], key: str) -> bytes:
    value = body.get(key)
    if not isinstance(value, str):
        raise BadHint(f"field {key!r} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadHint(f"field {key!r} is not base64") from exc


def _matching(body: dict[str, object], key: str, pattern: re.Pattern[str]) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadHint(f"field {key!r} is not a well-formed identifier")
    return value


def _link_data(body: dict[str, object]) -> bytes:
    data = _bytes(body, "b")
    if len(data) > MAX_MESSAGE_SIZE:
        raise BadHint("link message too large")
    return data


def _reason(body: dict[str, object]) -> str:
    value = body.get("why")
    if value not in LINK_REASONS or not isinstance(value, str):
        raise BadHint("field 'why' is not a link close reason")
    return value


def _carrier(tag: object, body: dict[str, object]) -> Hint:
    """The hints that carry bytes or a device link; BadHint for any other tag."""
    if tag == "relay":
        return Relay(_ids(body, "us"), _bytes(body, "b"))
    if tag == "ljoin":
        ref, origin = _matching(body, "ref", _REF), _text(body, "n")
        key = _matching(body, "k", _KEY)
        return LinkJoin(ref, origin, key, _text(body, "acc"), _text(body, "a"))
    if tag == "ljoined":
        return LinkJoined(_matching(body, "ref", _REF), _text(body, "n"), _text(body, "a"))
    if tag == "ldata":
        return LinkData(_matching(body, "ref", _REF), _text(body, "n"), _link_data(body))
    if tag == "lclosed":
        return LinkClosed(_matching(body, "ref", _REF), _reason(body))
    raise BadHint(f"unknown hint {tag!r}")


def decode(data: bytes) -> Hint:
    """The hint in `data`; BadHint for anything else (size, JSON, tag, fields)."""
    if len(data) > MAX_HINT_BYTES:
        raise BadHint("hint too large")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadHint("hint is not JSON") from exc
    if not isinstance(body, dict):
        raise BadHint("hint is not an object")
    tag = body.get("t")
    if tag == "user":
        return UserNews(_int(body, "u"))
    if tag == "news":
        return UsersNews(_ids(body, "us"))
    if tag == "room":
        return RoomNews(_int(body, "r"), _text(body, "n"))
    if tag == "presence":
        online = body.get("on")
        if not isinstance(online, bool):
            raise BadHint("field 'on' must be true or false")
        return PresenceChanged(_int(body, "u"), _text(body, "n"), online)
    if tag == "kick":
        return KickSession(_int(body, "u"), _text(body, "n"), _text(body, "a"))
    if tag == "members":
        return MembershipChanged(_ids(body, "us"))
    if tag == "down":
        return NodeDown(_text(body, "n"), _ids(body, "us"))
    return _carrier(tag, body)
