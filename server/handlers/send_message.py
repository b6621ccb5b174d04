"""SEND_MESSAGE: store one sealed envelope per recipient, push to those online, reply.

The reply (and the pushes) leave only after the reactor commits this turn, so an
acknowledged message is on disk. A message id belongs to its first sender: sending
it again replies as the first time did and stores nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import quotas
from server.handlers._common import USERNAME_MAX, caller
from server.handlers._params import get_choice, get_hex_id, get_hex_ids, get_int, get_str
from server.handlers._wire import delivery
from server.storage import attachments, friends, messages, rooms, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.SEND_MESSAGE
REQUIRES_AUTH = True
MAX_ENVELOPE = 64 * 1024  # a sealed text message is far smaller; attachments go by id
MAX_ATTACHMENTS = 16
MAX_RECIPIENTS = 10_000


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    sender_id, sender_name = caller(ctx)
    message_id = get_hex_id(params, "message_id")
    target_type = get_choice(params, "target_type", (messages.USER, messages.ROOM))
    already = messages.find_message(ctx.db, message_id)
    if already is not None:
        if already.sender_id != sender_id:
            raise RequestError("bad_request", "this message id is already in use", "message_id")
        return {"message_id": message_id, "time": already.time}

    target_id, recipients = _recipients(ctx, sender_id, target_type, params)
    envelopes = _envelopes(params, recipients)
    quotas.check_inboxes(ctx, recipients)
    attachment_ids = _attachments(ctx, sender_id, params)
    now = ctx.now()
    messages.store_message(
        ctx.db,
        message_id=message_id,
        sender_id=sender_id,
        target_type=target_type,
        target_id=target_id,
        time=now,
        envelopes=[(recipients[name], envelope) for name, envelope in envelopes.items()],
        attachment_ids=attachment_ids,
    )
    for name, envelope in envelopes.items():
        item = messages.Delivery(
            row_id=0,  # not on the wire
            message_id=message_id,
            sender_id=sender_id,
            sender=sender_name,
            target_type=target_type,
            target_id=target_id,
            time=now,
            envelope=envelope,
            attachments=attachment_ids,
        )
        if not _draining_backlog(ctx, recipients[name]):
            ctx.push(
                recipients[name], MessageType.NEW_MESSAGE, {"messages": [delivery(item, name)]}
            )
    return {"message_id": message_id, "time": now}


def _draining_backlog(ctx: Context, user_id: int) -> bool:
    """True while the recipient's offline backlog is still going out in windows.

    The new row sorts after the backlog's cursor, so a later window carries it;
    pushing it now would put it ahead of older messages.
    """
    connection = ctx.sessions.connection_for(user_id)
    return connection is not None and connection.backlog_cursor is not None


def _recipients(
    ctx: Context, sender_id: int, target_type: str, params: dict[str, Any]
) -> tuple[int, dict[str, int]]:
    """(target id, {recipient username: user id}) after checking the sender may send."""
    if target_type == messages.USER:
        name = get_str(params, "target", max_len=USERNAME_MAX)
        target = users.by_username(ctx.db, name)
        if target is None or not friends.are_friends(ctx.db, sender_id, target.id):
            raise RequestError("not_friends", f"{name} is not your friend", "target")
        return target.id, {target.username: target.id}
    room_id = get_int(params, "target")
    if not rooms.is_member(ctx.db, room_id, sender_id):
        raise RequestError("not_member", "you are not a member of this room", "target")
    members = rooms.members(ctx.db, room_id)
    return room_id, {m.username: m.id for m in members if m.id != sender_id}


def _envelopes(params: dict[str, Any], recipients: dict[str, int]) -> dict[str, bytes]:
    """Exactly one envelope per recipient, each within the size limit."""
    envelopes = params.get("envelopes")
    if type(envelopes) is not dict or len(envelopes) > MAX_RECIPIENTS:
        raise RequestError("bad_request", "'envelopes' must be a dict of name -> bytes")
    if not all(type(value) is bytes for value in envelopes.values()):
        raise RequestError("bad_request", "every envelope must be bytes", "envelopes")
    if any(len(value) > MAX_ENVELOPE for value in envelopes.values()):
        raise RequestError(
            "message_too_large", f"an envelope may hold at most {MAX_ENVELOPE} bytes"
        )
    missing = sorted(set(recipients) - set(envelopes))
    unexpected = sorted(set(envelopes) - set(recipients))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append("no envelope for " + ", ".join(missing))
        if unexpected:
            problems.append("not recipients: " + ", ".join(unexpected))
        raise RequestError("missing_envelope", "; ".join(problems), "envelopes")
    return {name: envelopes[name] for name in recipients}


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
