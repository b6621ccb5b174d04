"""The relay for linking a new computer: one-time codes and two connections joined.

Why it exists: the new computer has no keys and no session, the old one is logged in;
they need a meeting point. The new computer asks for a code (LINK_OPEN) for an
account; the old one, logged in as that account, enters it (LINK_JOIN); from then on
the relay passes opaque messages (LINK_SEND -> LINK_DATA push) between the two and
nothing else. It never sees the identity in clear: the clients run an authenticated
key exchange (`common/crypto/device_link.py`) through it.

Codes are eight random digits, single use (consumed by the first correct LINK_JOIN),
valid for `CODE_TTL_MS`, bound to the account that asked (a code entered by another
account is just a wrong code). A joined link lives at most `LINK_TTL_MS`. The
opener's anonymous connection is held past the login deadline while its link lives
(the relay caps such links per address and in all); once the link ends it gets one
more `login_grace` to log in, then it is closed.

State lives on the reactor thread only, like everything the handlers touch. In a
cluster a link lives on the opener's node; a joiner on another node is a `LinkEnd`
standing in for its connection there (`server/cluster/link_routes.py`), so every rule
here (single use, account binding, time limits, message count and size) is enforced by
the one node holding the link. The caps on links (per address, in all) are per node.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from common.crypto.device_link import normalise_code
from common.errors import RequestError
from common.names import canonical
from common.protocol.message import Message, push
from common.protocol.opcodes import MessageType
from server.net.connection import Connection

CODE_DIGITS = 8
CODE_TTL_MS = 5 * 60_000
LINK_TTL_MS = 10 * 60_000
MAX_LINKS = 1_000
MAX_LINKS_PER_ADDRESS = 4
MAX_MESSAGES = 8  # per direction: the exchange needs two
MAX_MESSAGE_SIZE = 8_192 + 1


class LinkEnd(Protocol):
    """What the relay needs of a joined computer: a `Connection`, or its stand-in for
    a connection held by another node of a cluster."""

    @property
    def address(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    def send(self, message: Message) -> None: ...


@dataclass(eq=False)
class Link:
    code: str
    account: str  # canonical form of the account name
    opener: Connection
    opened_ms: int
    joiner: LinkEnd | None = None
    sent: dict[LinkEnd, int] = field(default_factory=dict)

    @property
    def expires_ms(self) -> int:
        """Unjoined, the code lapses; joined, the whole exchange has a longer limit."""
        return self.opened_ms + (CODE_TTL_MS if self.joiner is None else LINK_TTL_MS)

    def other(self, connection: LinkEnd) -> LinkEnd | None:
        if connection is self.opener:
            return self.joiner
        return self.opener if connection is self.joiner else None


class LinkRelay:
    """Open, join, relay and close link sessions; expire them in `sweep`."""

    def __init__(
        self, login_grace_ms: int = 30_000, code_source: Callable[[], str] | None = None
    ) -> None:
        self._login_grace_ms = login_grace_ms
        self._by_code: dict[str, Link] = {}
        self._by_connection: dict[LinkEnd, Link] = {}
        self._new_code = code_source or _random_code
        #: Openers whose link ended: (connection, close unless logged in by then).
        self._grace: dict[Connection, int] = {}

    def __len__(self) -> int:
        return len(self._by_code)

    def open(self, connection: Connection, username: str, now_ms: int) -> Link:
        """A new code for `username`; the connection's earlier link, if any, ends."""
        self.close(connection, "cancelled", now_ms)
        address = connection.peer[0]
        held = sum(1 for link in self._by_code.values() if link.opener.peer[0] == address)
        if len(self._by_code) >= MAX_LINKS or held >= MAX_LINKS_PER_ADDRESS:
            raise RequestError("too_many_links", "too many computers are being linked right now")
        code = self._new_code()
        while code in self._by_code:
            code = self._new_code()
        link = Link(code, canonical(username), connection, now_ms)
        self._by_code[code] = link
        self._by_connection[connection] = link
        self._grace.pop(connection, None)
        return link

    def holds(self, code: str) -> bool:
        """True if `code` is a link of this relay (used, expired or not)."""
        return normalise_code(code) in self._by_code

    def join(self, connection: LinkEnd, username: str, code: str, now_ms: int) -> Link:
        """Consume `code` for the logged-in `username`; `link_code_invalid` otherwise."""
        link = self._by_code.get(normalise_code(code))
        if (
            link is None
            or link.joiner is not None
            or link.expires_ms <= now_ms
            or link.account != canonical(username)
            or link.opener is connection
            or not link.opener.is_open
        ):
            raise invalid_code()
        self.close(connection, "cancelled", now_ms)
        link.joiner = connection
        self._by_connection[connection] = link
        link.opener.send(push(MessageType.LINK_JOINED, {"address": connection.address}))
        return link

    def link_of(self, connection: LinkEnd) -> Link | None:
        """The link this connection opened or joined, if it still lives."""
        return self._by_connection.get(connection)

    def relay(self, connection: LinkEnd, data: bytes) -> None:
        """Pass `data` to the other computer of this connection's joined link."""
        link = self._by_connection.get(connection)
        other = link.other(connection) if link is not None else None
        if link is None or other is None:
            raise RequestError("no_link", "no computer is linked on this connection")
        if len(data) > MAX_MESSAGE_SIZE:
            raise RequestError("bad_request", "link message too large", "data")
        count = link.sent.get(connection, 0)
        if count >= MAX_MESSAGES:
            raise RequestError("bad_request", "too many link messages", "data")
        link.sent[connection] = count + 1
        other.send(push(MessageType.LINK_DATA, {"data": data}))

    def close(self, connection: LinkEnd, reason: str, now_ms: int) -> None:
        """End this connection's link; the other computer hears `reason`."""
        link = self._by_connection.get(connection)
        if link is not None:
            self._end(link, reason, told=connection, now_ms=now_ms)

    def connection_closed(self, connection: Connection, now_ms: int) -> None:
        self._grace.pop(connection, None)
        self.close(connection, "peer_gone", now_ms)

    def sweep(self, now_ms: int) -> None:
        """End expired links; close openers that did not log in within their grace."""
        for link in [link for link in self._by_code.values() if link.expires_ms <= now_ms]:
            self._end(link, "expired", told=None, now_ms=now_ms)
        for connection, deadline in list(self._grace.items()):
            if connection.user_id is not None or connection.closed:
                del self._grace[connection]
            elif deadline <= now_ms:
                del self._grace[connection]
                connection.close("no login after linking")

    def _end(self, link: Link, reason: str, told: LinkEnd | None, now_ms: int) -> None:
        self._by_code.pop(link.code, None)
        for end in (link.opener, link.joiner):
            if end is not None and self._by_connection.get(end) is link:
                del self._by_connection[end]
        for end in (link.opener, link.joiner):
            if end is not None and end is not told and end.is_open:
                end.send(push(MessageType.LINK_CLOSED, {"reason": reason}))
        opener = link.opener
        if opener.user_id is None and not opener.closed:
            self._grace[opener] = now_ms + self._login_grace_ms


def invalid_code() -> RequestError:
    """The one refusal for a code that is wrong, expired, used or another account's."""
    return RequestError(
        "link_code_invalid",
        "this code is wrong, expired or already used: start again on the new computer",
        "code",
    )


def _random_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
