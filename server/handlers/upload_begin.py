"""UPLOAD_BEGIN {attachment_id, size, digest} -> {attachment_id, offset}.

Starts an upload, or resumes one: `offset` is how many bytes the server already
holds, checked against the bytes stored in case a crash lost the tail of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import quotas
from server.handlers._common import attachment_store, caller
from server.handlers._params import get_bytes, get_hex_id, get_int
from server.storage import attachments

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.UPLOAD_BEGIN
REQUIRES_AUTH = True
DIGEST_SIZE = 32
MAX_OPEN_UPLOADS = 8  # bounds the disk one account can hold with unfinished uploads


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    attachment_id = get_hex_id(params, "attachment_id")
    size = get_int(params, "size")
    digest = get_bytes(params, "digest", max_len=DIGEST_SIZE)
    if len(digest) != DIGEST_SIZE:
        raise RequestError("bad_request", "'digest' must be 32 bytes (SHA-256)", "digest")
    limit = ctx.config.max_attachment_size
    if size > limit:
        raise RequestError(
            "attachment_too_large", f"attachments are limited to {limit} bytes", "size"
        )
    existing = attachments.get(ctx.db, attachment_id)
    if existing is None:
        if attachments.open_uploads(ctx.db, user_id) >= MAX_OPEN_UPLOADS:
            raise RequestError(
                "too_many_uploads",
                f"finish or abandon your {MAX_OPEN_UPLOADS} unfinished uploads first",
            )
        quotas.check_upload(ctx, user_id, size)
        attachments.create(
            ctx.db, attachment_id, uploader_id=user_id, size=size, digest=digest, now=ctx.now()
        )
        return {"attachment_id": attachment_id, "offset": 0}
    if existing.uploader_id != user_id or existing.size != size or existing.digest != digest:
        raise RequestError("bad_request", "this attachment id is already in use", "attachment_id")
    if existing.complete:
        return {"attachment_id": attachment_id, "offset": existing.size}
    on_disk = attachment_store(ctx).partial_size(ctx.db, attachment_id)
    offset = min(existing.received, on_disk)
    if offset != existing.received:
        attachments.set_received(ctx.db, attachment_id, offset)
    return {"attachment_id": attachment_id, "offset": offset}
