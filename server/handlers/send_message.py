"""SEND_MESSAGE: store one envelope for the whole conversation, push it, reply.

End-to-end v2 (DESIGN.md section 3b): the sender seals one envelope with its sender
chain, whatever the number of recipients, plus a chain distribution for each member
that needs the chain's state (a new chain, a new member, a rotation). The server
stores the envelope once and each distribution for its recipient; every member's
delivery cursor (`server.storage.messages`) says what it still has to receive.

The message is stored at the end of the reactor turn with every other one the turn
accepted (`server.turn`), then pushed and answered; the reply (and the pushes) leave
only after the turn's commit, so an acknowledged message is on disk. A message id
belongs to its first sender: sending it again replies as the first time did and
stores nothing.

This is the server's hot path, so it does each thing once: the friend or the room's
members, their list hash and the cursor check come from the session's cache
(`server.session_cache`); the duplicate check is the INSERT itself; the conversation
is touched once per turn (`server.turn`); the NEW_MESSAGE push is encoded once for
every member without a distribution (`_wire.DeliveryPushes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.distribution import DISTRIBUTION_SIZE
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import quotas
from server.dispatch import STORAGE_BUSY_TEXT
from server.handlers._common import USERNAME_MAX, caller
from server.handlers._params import get_bytes, get_choice, get_hex_id, get_hex_ids, get_int, get_str
from server.handlers._wire import DeliveryPushes
from server.session_cache import ensure_cursors, friend_named, room_member_hash, room_members
from server.storage import attachments, messages
from server.turn import StoreOutcome

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.SEND_MESSAGE
REQUIRES_AUTH = True
MAX_ENVELOPE = 64 * 1024  # a sealed text message is far smaller; attachments go by id
MAX_ATTACHMENTS = 16
MAX_RECIPIENTS = 10_000
MEMBER_HASH_SIZE = 32


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | None:
    sender_id, sender_name = caller(ctx)
    message_id = get_hex_id(params, "message_id")
    target_type = get_choice(params, "target_type", (messages.USER, messages.ROOM))
    try:
        envelope = _envelope(params)
        target_id, recipients = _recipients(ctx, sender_id, target_type, params)
        distributions = _distributions(params, recipients)
        quotas.check_inboxes(ctx, recipients)
        attachment_ids = _attachments(ctx, sender_id, params)
    except RequestError:
        # A retry of a stored message answers as the first send did, even if the
        # friendship or membership has changed since.
        answer = _already_stored(ctx, sender_id, message_id)
        if answer is None:
            raise
        return answer
    ensure_cursors(ctx.connection, ctx.db, sender_id, target_type, target_id)
    new = messages.NewEnvelope(
        message_id=message_id,
        sender_id=sender_id,
        target_type=target_type,
        target_id=target_id,
        time=ctx.now(),
        envelope=envelope,
        distributions={recipients[name]: data for name, data in distributions.items()},
        attachment_ids=attachment_ids,
    )
    outcome = _Outcome(ctx, new, sender_name, recipients, distributions)
    ctx.turn.store(new, outcome.stored)
    return None  # answered at the end of the turn, once stored with the turn's others


class _Outcome:
    """What follows the store at the end of the turn: push to each recipient, answer."""

    __slots__ = ("ctx", "distributions", "new", "recipients", "sender_name")

    def __init__(
        self,
        ctx: Context,
        new: messages.NewEnvelope,
        sender_name: str,
        recipients: dict[str, int],
        distributions: dict[str, bytes],
    ) -> None:
        self.ctx = ctx
        self.new = new
        self.sender_name = sender_name
        self.recipients = recipients
        self.distributions = distributions

    def stored(self, outcome: StoreOutcome) -> None:
        """After the turn's commit (reactor thread): answer, and push if it is new."""
        try:
            self.ctx.reply(self._answer(outcome))
        except RequestError as exc:
            self.ctx.fail(exc.code, exc.message, exc.field)

    def _answer(self, outcome: StoreOutcome) -> dict[str, Any]:
        new = self.new
        if outcome.lost:
            raise RequestError("server_busy", STORAGE_BUSY_TEXT)
        if outcome.row_id is None:  # the id is taken: by this sender (a retry) or another
            return _answer_to_repeat(new.sender_id, outcome.taken_by)
        ctx = self.ctx
        item = messages.Delivery(
            row_id=outcome.row_id,
            message_id=new.message_id,
            sender_id=new.sender_id,
            sender=self.sender_name,
            target_type=new.target_type,
            target_id=new.target_id,
            time=new.time,
            envelope=new.envelope,
            attachments=list(new.attachment_ids),
        )
        pushes = DeliveryPushes(item)
        draining = ctx.services.backlog.draining
        for name, user_id in self.recipients.items():
            if not draining(user_id):  # a later backlog window carries it, in order
                ctx.push_encoded(user_id, pushes.body(name, self.distributions.get(name)))
        return {"message_id": new.message_id, "time": new.time}


def _envelope(params: dict[str, Any]) -> bytes:
    envelope = params.get("envelope")
    if type(envelope) is not bytes or not envelope:
        raise RequestError("bad_request", "'envelope' must be bytes", "envelope")
    if len(envelope) > MAX_ENVELOPE:
        raise RequestError(
            "message_too_large", f"an envelope may hold at most {MAX_ENVELOPE} bytes", "envelope"
        )
    return envelope


def _already_stored(ctx: Context, sender_id: int, message_id: str) -> dict[str, Any] | None:
    """The reply to a repeated send, None if the id was never stored."""
    already = messages.find_message(ctx.db, message_id)
    if already is None:
        return None
    return _answer_to_repeat(sender_id, already)


def _answer_to_repeat(sender_id: int, already: messages.StoredMessage | None) -> dict[str, Any]:
    """A send whose id is taken: answered as the first send was if it is the sender's
    retry. An id stored by another sender is refused: a message id belongs to its first
    sender (and one the turn's store could not find is refused the same way)."""
    if already is None or already.sender_id != sender_id:
        raise RequestError("bad_request", "this message id is already in use", "message_id")
    return {"message_id": already.message_id, "time": already.time}


def _recipients(
    ctx: Context, sender_id: int, target_type: str, params: dict[str, Any]
) -> tuple[int, dict[str, int]]:
    """(target id, {recipient username: user id}) after checking the sender may send.

    For a room the sender names the member list it sealed for (`member_hash`); if the
    room's members changed since, the message is refused (`missing_envelope`) so the
    client distributes its chain to the newcomers (or rotates after a leave) first.
    """
    connection = ctx.connection
    if target_type == messages.USER:
        name = get_str(params, "target", max_len=USERNAME_MAX)
        friend = friend_named(connection, ctx.db, sender_id, name)
        if friend is None:
            raise RequestError("not_friends", f"{name} is not your friend", "target")
        return friend[1], {friend[0]: friend[1]}
    room_id = get_int(params, "target")
    members = room_members(connection, ctx.db, sender_id, room_id)
    if sender_id not in members.values():
        raise RequestError("not_member", "you are not a member of this room", "target")
    sealed_for = get_bytes(params, "member_hash", max_len=MEMBER_HASH_SIZE)
    if sealed_for != room_member_hash(connection, ctx.db, sender_id, room_id):
        raise RequestError(
            "missing_envelope", "the room's members changed; reseal for them", "member_hash"
        )
    return room_id, {name: uid for name, uid in members.items() if uid != sender_id}


def _distributions(params: dict[str, Any], recipients: dict[str, int]) -> dict[str, bytes]:
    """The chain distributions, at most one per recipient, each of the fixed size."""
    value = params.get("distributions", {})
    if type(value) is not dict or len(value) > MAX_RECIPIENTS:
        raise RequestError("bad_request", "'distributions' must be a dict of name -> bytes")
    for name, data in value.items():
        if type(data) is not bytes or len(data) != DISTRIBUTION_SIZE:
            raise RequestError("bad_request", "a distribution has the wrong size", "distributions")
        if name not in recipients:
            raise RequestError("missing_envelope", f"{name} is not a recipient", "distributions")
    return value


def _attachments(ctx: Context, sender_id: int, params: dict[str, Any]) -> list[str]:
    """The listed attachments, each a complete upload by the sender."""
    ids = get_hex_ids(params, "attachments", max_items=MAX_ATTACHMENTS, default=[])
    for attachment_id in ids:
        found = attachments.get(ctx.db, attachment_id)
        if found is None or not found.complete or found.uploader_id != sender_id:
            raise RequestError(
                "attachment_not_found", f"no finished upload {attachment_id}", "attachments"
            )
    return ids
