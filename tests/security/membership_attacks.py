"""A malicious server for signed room membership: handlers swapped in a test build.

`server.app` imports this module when UCHAT_TEST_SERVER_HOOK names it and calls
`install(server)`. UCHAT_TEST_MEMBERSHIP_ATTACK chooses the lie; it starts once the
test creates the file `attack_on` in the data folder, so the room is set up honestly:

- `ghost`: JOIN_ROOM by GHOST is accepted without a signed join: the server puts
  GHOST into the room's table, tells the members "joined" (no entry), and lists GHOST
  in ROOM_MEMBERS and ROOM_CERTIFICATES; the log never holds a join by GHOST.
- `stale`: VICTIM is served the member list and log as they were when the attack
  started (ROOM_MEMBERS, ROOM_CERTIFICATES, ROOM_LOG), whatever happened since.
- `withhold`: LEAVER's leave is stored and relayed to everyone but VICTIM, and left
  out of the log VICTIM reads; later events are served as they are.
- `unlogged`: the signers' certificates in the log VICTIM reads come without their
  key-transparency proofs (as a certificate the server made up would).
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

from common.crypto.membership import EventKind, MembershipEvent
from common.crypto.room_log import is_legacy
from common.protocol.opcodes import MessageType
from server.app import Server
from server.dispatch import Context
from server.handlers import (
    join_room,
    leave_room,
    room_certificates,
    room_log,
    room_members,
)
from server.handlers._common import caller, existing_room
from server.handlers._wire import room
from server.storage import rooms, users

VICTIM = "alice"
GHOST = "mallory"
LEAVER = "carol"


class Attack:
    def __init__(self, server: Server, mode: str) -> None:
        self.mode = mode
        self.data_dir = Path(server.config.data_dir)
        self.snapshot: dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}

    def on(self) -> bool:
        return (self.data_dir / "attack_on").exists()

    def victim(self, ctx: Context) -> bool:
        return ctx.username == VICTIM and self.on()

    # -- ghost --------------------------------------------------------------------------

    def join(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.mode != "ghost" or not self.on() or ctx.username != GHOST:
            honest: dict[str, Any] = join_room.handle(ctx, params)
            return honest
        user_id, username = caller(ctx)
        room_id = existing_room(ctx, params).id
        others = rooms.member_ids(ctx.db, room_id)
        rooms.add_member(ctx.db, room_id, user_id, ctx.now())  # no event in the log
        ctx.push_many(
            others,
            MessageType.ROOM_MEMBER_EVENT,
            {"room_id": room_id, "username": username, "event": "joined"},
        )
        view = rooms.room_view(ctx.db, room_id)
        assert view is not None
        return room(view)

    # -- stale --------------------------------------------------------------------------

    def _snapshot(
        self, ctx: Context, params: dict[str, Any], fresh: bool = False
    ) -> tuple[Any, Any, Any]:
        room_id = params["room_id"]
        if fresh or room_id not in self.snapshot:
            self.snapshot[room_id] = (
                room_members.handle(ctx, params),
                room_certificates.handle(ctx, {"room_id": room_id}),
                room_log.handle(ctx, {"room_id": room_id}),
            )
        return self.snapshot[room_id]

    def take_snapshot(self, ctx: Context, params: dict[str, Any]) -> None:
        """Until the attack starts, remember the newest view the victim was given."""
        if self.mode == "stale" and ctx.username == VICTIM and not self.on():
            self._snapshot(ctx, params, fresh=True)

    def members(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "stale" and self.victim(ctx):
            stale: dict[str, Any] = self._snapshot(ctx, params)[0]
            return stale
        honest: dict[str, Any] = room_members.handle(ctx, params)
        self.take_snapshot(ctx, params)
        return honest

    def certificates(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "stale" and self.victim(ctx):
            stale: dict[str, Any] = self._snapshot(ctx, params)[1]
            return stale
        honest: dict[str, Any] = room_certificates.handle(ctx, params)
        self.take_snapshot(ctx, params)
        return honest

    # -- stale and withhold: the log ----------------------------------------------------

    def log(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        honest: dict[str, Any] = room_log.handle(ctx, params)
        if self.mode == "stale" and self.victim(ctx):
            old = self._snapshot(ctx, params)[2]
            after = honest["after"]
            return {**old, "after": after, "entries": old["entries"][after:]}
        if self.mode == "stale":
            self.take_snapshot(ctx, params)
        if self.mode == "unlogged" and self.victim(ctx):
            bare = {n: {"certificate": c["certificate"]} for n, c in honest["certificates"].items()}
            return {**honest, "certificates": bare}
        if self.mode == "withhold" and self.victim(ctx):
            kept = [e for e in honest["entries"] if not _leave_by(e, LEAVER)]
            hidden = len(honest["entries"]) - len(kept)
            return {**honest, "entries": kept, "length": honest["length"] - hidden}
        return honest

    def leave(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "withhold" and self.on() and ctx.username == LEAVER:
            victim = users.by_username(ctx.db, VICTIM)
            assert victim is not None
            muted: dict[str, Any] = leave_room.handle(_Muted(ctx, victim.id), params)  # type: ignore[arg-type]
            return muted
        honest: dict[str, Any] = leave_room.handle(ctx, params)
        return honest


def _leave_by(entry: bytes, name: str) -> bool:
    if is_legacy(entry):
        return False
    event = MembershipEvent.from_wire(entry)
    return event.kind is EventKind.LEAVE and event.actor == name


class _Muted:
    """The handler's context, minus every push to one user."""

    def __init__(self, ctx: Context, muted: int) -> None:
        self._ctx = ctx
        self._muted = muted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def push_many(self, user_ids: Any, kind: MessageType, params: dict[str, Any]) -> int:
        return self._ctx.push_many([u for u in user_ids if u != self._muted], kind, params)

    def push(self, user_id: int, kind: MessageType, params: dict[str, Any]) -> bool:
        return user_id != self._muted and self._ctx.push(user_id, kind, params)


def _module(opcode: MessageType, handle: Any) -> types.ModuleType:
    module = types.ModuleType(f"membership_attack_{opcode.name.lower()}")
    module.OPCODE = opcode  # type: ignore[attr-defined]
    module.REQUIRES_AUTH = True  # type: ignore[attr-defined]
    module.handle = handle  # type: ignore[attr-defined]
    return module


def install(server: Server) -> None:
    attack = Attack(server, os.environ["UCHAT_TEST_MEMBERSHIP_ATTACK"])
    for opcode, handle in (
        (MessageType.JOIN_ROOM, attack.join),
        (MessageType.LEAVE_ROOM, attack.leave),
        (MessageType.ROOM_MEMBERS, attack.members),
        (MessageType.ROOM_CERTIFICATES, attack.certificates),
        (MessageType.ROOM_LOG, attack.log),
    ):
        server.dispatcher.replace(_module(opcode, handle))
