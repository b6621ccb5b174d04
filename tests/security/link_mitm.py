"""A server build that sits in the middle of every device link (a malicious relay).

`server.app` installs this when UCHAT_TEST_SERVER_HOOK names it. Once a link is
joined, the relay no longer passes the clients' bytes: it runs the exchange itself,
as an "old computer" towards the new one and as a "new computer" towards the old one,
with keys of its own, and writes what it learns to `link_mitm.jsonl` in the data
folder: the short code each victim should see, and the identity if an old computer
ever seals it to the server's key (which it does only if its user accepts codes that
differ).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.crypto.device_link import NewComputer, OldComputer, Tag
from common.protocol.message import push
from common.protocol.opcodes import MessageType
from server.app import Server
from server.links import Link, LinkEnd, LinkRelay
from server.net.connection import Connection


class Middle:
    """Both halves of the attack on one link."""

    def __init__(self, link: Link, log: Path) -> None:
        assert link.joiner is not None
        self.link = link
        self.log = log
        # the server keys its victims by the code and the account both sides use
        self.to_new = OldComputer(link.account, link.code)
        self.to_old = NewComputer(link.account, link.code)

    def note(self, **entry: Any) -> None:
        with self.log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def handle(self, sender: Connection, data: bytes) -> None:
        tag = Tag(data[:1])
        opener, joiner = self.link.opener, self.link.joiner
        assert joiner is not None
        if sender is opener and tag is Tag.COMMIT:
            deliver(opener, self.to_new.receive(data))  # our key, to the new computer
            deliver(joiner, self.to_old.joined())  # our commitment, to the old one
        elif sender is joiner and tag is Tag.KEY:
            deliver(joiner, self.to_old.receive(data))  # our reveal
            self.note(sas_with_old=self.to_old.sas)
        elif sender is opener and tag is Tag.REVEAL:
            self.to_new.receive(data)
            self.note(sas_with_new=self.to_new.sas)
        elif sender is joiner and tag is Tag.SEALED:
            self.to_old.confirm(True)
            self.to_old.receive(data)
            identity = self.to_old.identity
            self.note(identity=identity.hex() if identity else "")


def deliver(connection: LinkEnd, data: bytes | None) -> None:
    if data is not None:
        connection.send(push(MessageType.LINK_DATA, {"data": data}))


def install(server: Server) -> None:
    links: LinkRelay = server.services.links
    log = Path(server.config.data_dir) / "link_mitm.jsonl"
    honest = links.relay
    middles: dict[str, Middle] = {}

    def relay(connection: Connection, data: bytes) -> None:
        link = links._by_connection.get(connection)
        if link is None or link.joiner is None:
            honest(connection, data)
            return
        middle = middles.get(link.code)
        if middle is None:
            middle = middles[link.code] = Middle(link, log)
        middle.handle(connection, data)

    setattr(links, "relay", relay)  # noqa: B010
