"""UPLOAD_CHUNK {attachment_id, offset, data} -> {offset, complete}.

Each chunk must start exactly where the server's copy ends. The chunk that reaches
the declared size triggers a SHA-256 check of the whole file on the worker pool
(hashing 100 MB would stall every conversation on the reactor); a mismatch deletes
the upload so the client starts over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import attachment_files, caller
from server.handlers._params import get_bytes, get_hex_id, get_int
from server.storage import attachments
from server.storage.attachment_files import AttachmentFiles

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.UPLOAD_CHUNK
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | None:
    user_id, _ = caller(ctx)
    attachment_id = get_hex_id(params, "attachment_id")
    offset = get_int(params, "offset")
    data = get_bytes(params, "data", max_len=ctx.config.chunk_size)
    upload = attachments.get(ctx.db, attachment_id)
    if upload is None or upload.uploader_id != user_id:
        raise RequestError("attachment_not_found", "no such upload; begin it first")
    if upload.complete:
        if offset == upload.size and not data:
            return {"offset": upload.size, "complete": True}
        raise RequestError("bad_offset", "this upload is already complete", "offset")
    if offset != upload.received:
        raise RequestError(
            "bad_offset", f"the server has {upload.received} bytes; send from there", "offset"
        )
    end = offset + len(data)
    if end > upload.size:
        raise RequestError("bad_request", f"the upload is declared as {upload.size} bytes", "data")
    if not data and end < upload.size:
        raise RequestError("bad_request", "an empty chunk makes no progress", "data")
    files = attachment_files(ctx)
    files.write_at(attachment_id, offset, data)
    attachments.set_received(ctx.db, attachment_id, end)
    if end < upload.size:
        return {"offset": end, "complete": False}
    ctx.run_in_worker(
        lambda: _digest_or_none(files, attachment_id),
        lambda digest: _finish(ctx, files, attachment_id, digest),
    )
    return None


def _digest_or_none(files: AttachmentFiles, attachment_id: str) -> bytes | None:
    """SHA-256 of the partial file; None if a concurrent check already moved it."""
    try:
        return files.partial_digest(attachment_id)
    except FileNotFoundError:
        return None


def _finish(ctx: Context, files: AttachmentFiles, attachment_id: str, digest: bytes | None) -> None:
    upload = attachments.get(ctx.db, attachment_id)
    if upload is None:
        raise RequestError("attachment_not_found", "the upload was discarded")
    if upload.complete:
        ctx.reply({"offset": upload.size, "complete": True})
        return
    if digest != upload.digest:
        files.discard(attachment_id)
        attachments.delete(ctx.db, attachment_id)
        raise RequestError(
            "digest_mismatch", "the uploaded bytes do not match the digest; upload again"
        )
    files.finish(attachment_id)
    attachments.mark_complete(ctx.db, attachment_id)
    ctx.reply({"offset": upload.size, "complete": True})
