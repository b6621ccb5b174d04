"""DOWNLOAD_CHUNK {attachment_id, offset, length} -> {data, size}.

Only the uploader and the recipients of a message that lists the attachment may
read it; the bytes are ciphertext either way, but who fetched what is still private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import attachment_store, caller
from server.handlers._params import get_hex_id, get_int
from server.storage import attachments, messages

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.DOWNLOAD_CHUNK
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    attachment_id = get_hex_id(params, "attachment_id")
    offset = get_int(params, "offset")
    length = min(get_int(params, "length"), ctx.config.chunk_size)
    found = attachments.get(ctx.db, attachment_id)
    if found is None or not found.complete:
        raise RequestError("attachment_not_found", "no such attachment", "attachment_id")
    allowed = found.uploader_id == user_id or messages.is_attachment_recipient(
        ctx.db, attachment_id, user_id
    )
    if not allowed:
        raise RequestError("forbidden", "this attachment was not sent to you", "attachment_id")
    if offset > found.size:
        raise RequestError("bad_offset", f"the attachment has {found.size} bytes", "offset")
    data = attachment_store(ctx).read(ctx.db, attachment_id, offset, length)
    return {"data": data, "size": found.size}
