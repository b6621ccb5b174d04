"""UPLOAD_CHUNK {attachment_id, offset, data} -> {offset, complete}.

Each chunk must start exactly where the server's copy ends. The chunk that reaches
the declared size triggers a SHA-256 check of the whole file on the worker pool
(hashing 100 MB would stall every conversation on the reactor; in PostgreSQL it reads
the chunks over its own connection); a mismatch deletes
the upload so the client starts over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import attachment_store, caller
from server.handlers._params import get_bytes, get_hex_id, get_int
from server.storage import attachments
from server.storage.attachment_store import AttachmentStore

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
    store = attachment_store(ctx)
    store.write_at(ctx.db, attachment_id, offset, data)
    attachments.set_received(ctx.db, attachment_id, end)
    if end < upload.size:
        return {"offset": end, "complete": False}
    ctx.run_in_worker(
        store.digest_job(attachment_id, offset, data),
        lambda digest: _finish(ctx, store, attachment_id, digest),
    )
    return None


def _finish(ctx: Context, store: AttachmentStore, attachment_id: str, digest: bytes | None) -> None:
    upload = attachments.get(ctx.db, attachment_id)
    if upload is None:
        raise RequestError("attachment_not_found", "the upload was discarded")
    if upload.complete:
        ctx.reply({"offset": upload.size, "complete": True})
        return
    if digest != upload.digest:
        store.discard(ctx.db, attachment_id)
        attachments.delete(ctx.db, attachment_id)
        raise RequestError(
            "digest_mismatch", "the uploaded bytes do not match the digest; upload again"
        )
    store.finish(ctx.db, attachment_id)
    attachments.mark_complete(ctx.db, attachment_id)
    ctx.reply({"offset": upload.size, "complete": True})
