"""A malicious server for end-to-end v2: SEND_MESSAGE swapped (UCHAT_TEST_SERVER_HOOK).

Loaded by `tests/security/test_chain_attacks.py`. The server runs honestly until a file
`attack_<name>` naming a user appears in its data folder; then, on that user's next
message:

- `replay`:  attaches to it the chain distribution it stored for that recipient with
             an earlier message of the same sender (a replayed distribution);
- `reorder`: holds the message back (answering the sender "stored") and delivers it
             after the sender's next one, with the server time set an hour earlier;
- `drop`:    never stores the message but tells the sender it was delivered
             (a forged MESSAGE_DELIVERED);
- `relabel`: stores a direct message as a message of a room both users are in;
- `strip`:   stores the message without the chain distributions it carries (the
             recipients never get the state of the sender's chain);
- `forget_ack` (on ACK_DELIVERY, for the user acknowledging): answers the user's next
             acknowledgement without moving its cursor, as a node that died before
             its commit would; what it acknowledged is pushed again after a login.

Each attack runs once and removes its file.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from common.crypto.membership import member_list_hash
from common.protocol.opcodes import MessageType
from server.handlers import ack_delivery, send_message
from server.storage import rooms, users

if TYPE_CHECKING:
    from server.app import Server
    from server.dispatch import Context

HOUR_MS = 3600 * 1000


class Attack:
    def __init__(self, server: Server) -> None:
        self.data_dir = Path(server.config.data_dir)
        self.first_distribution: dict[tuple[str, str], bytes] = {}  # (sender, recipient)
        self.held: dict[str, Any] | None = None

    def armed(self, name: str, sender: str) -> bool:
        """The file names the sender whose next message is attacked."""
        flag = self.data_dir / f"attack_{name}"
        if flag.exists() and flag.read_text() == sender:
            flag.unlink()
            return True
        return False

    def handle(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any] | None:
        sender = str(ctx.username)
        for recipient, data in (params.get("distributions") or {}).items():
            self.first_distribution.setdefault((sender, recipient), data)
        if self.armed("replay", sender):
            replayed = {
                recipient: data
                for (who, recipient), data in self.first_distribution.items()
                if who == sender
            }
            params = {**params, "distributions": replayed}
        if self.armed("drop", sender):
            forged = {"message_id": params["message_id"], "recipient": params["target"]}
            ctx.push(int(ctx.user_id or 0), MessageType.MESSAGE_DELIVERED, {"deliveries": [forged]})
            return {"message_id": params["message_id"], "time": ctx.now()}
        if self.armed("strip", sender):
            params = {**params, "distributions": {}}
        if self.armed("relabel", sender):
            params = self._as_room_message(ctx, params)
        if self.armed("reorder", sender):
            self.held = params
            return {"message_id": params["message_id"], "time": ctx.now()}
        answer = send_message.handle(ctx, params)
        if self.held is not None:
            held, self.held = self.held, None
            early = cast("Context", _Retimed(ctx, -HOUR_MS))  # stored and pushed an hour "early"
            send_message.handle(early, held)
        return answer

    def acknowledge(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.armed("forget_ack", str(ctx.username)):
            return {}
        return ack_delivery.handle(ctx, params)

    def _user_id(self, ctx: Context, name: str) -> int:
        user = users.by_username(ctx.db, name)
        return 0 if user is None else user.id

    def _as_room_message(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        sender = int(ctx.user_id or 0)
        target = self._user_id(ctx, str(params["target"]))
        for view in rooms.rooms_of(ctx.db, sender):
            names = list(view.members)
            member_ids = {member.id for member in rooms.members(ctx.db, view.id)}
            if target in member_ids:
                return {
                    **params,
                    "target_type": "room",
                    "target": view.id,
                    "member_hash": member_list_hash(str(view.id), names),
                    "distributions": {},
                }
        raise AssertionError("the relabel attack needs a room both users are in")


class _Retimed:
    """The request's context with the server clock moved (what a re-timing server does)."""

    def __init__(self, ctx: Context, shift_ms: int) -> None:
        self._ctx = ctx
        self._shift = shift_ms

    def now(self) -> int:
        return self._ctx.now() + self._shift

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _handler(name: str, opcode: MessageType, handle: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.OPCODE = opcode  # type: ignore[attr-defined]
    module.REQUIRES_AUTH = True  # type: ignore[attr-defined]
    module.handle = handle  # type: ignore[attr-defined]
    return module


def install(server: Server) -> None:
    attack = Attack(server)
    server.dispatcher.replace(
        _handler("chain_attack_send_message", MessageType.SEND_MESSAGE, attack.handle)
    )
    server.dispatcher.replace(
        _handler("chain_attack_ack_delivery", MessageType.ACK_DELIVERY, attack.acknowledge)
    )
