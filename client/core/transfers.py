"""Attachment upload and download: encrypted once, moved in chunks, resumable.

The sender encrypts the file once into a staging file (re-encrypting would change the
digest the server already holds) and records it in the store, so an upload resumes
after a restart from the offset the server reports. Every chunk is its own request,
so chat messages from other threads slip in between chunks; a few chunks are kept in
flight to fill the pipe. Downloads are decrypted chunk by chunk as the bytes arrive,
the digest of the whole ciphertext is checked, and the file appears under its final
(sanitised, unique) name only when every check passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from client.core import media
from client.core.connection import PendingRequest
from client.core.models import Attachment, ChatKind, MessageKind
from client.core.store import UploadState
from common.crypto.attachments import (
    CHUNK_SIZE,
    AttachmentDecryptor,
    encrypt_file,
    encrypted_size,
)
from common.crypto.primitives import constant_time_equal
from common.errors import CryptoError, RemoteProtocolError, RequestError
from common.fileio import make_private_dir
from common.protocol.opcodes import MessageType

DEFAULT_WINDOW = 4

RequestFunction = Callable[[MessageType, dict[str, Any]], dict[str, Any]]
StartFunction = Callable[[MessageType, dict[str, Any]], PendingRequest]
Progress = Callable[[int, int], None]
ProgressReporter = Callable[[str, int, int, str], None]  # attachment_id, done, total, direction


class UploadStore(Protocol):
    """The slice of `LocalStore` transfers need."""

    def save_upload(self, state: UploadState) -> None: ...

    def set_upload_offset(self, attachment_id: str, offset: int) -> None: ...

    def remove_upload(self, attachment_id: str) -> None: ...


def check_attachment_size(plain_size: int, max_size: int) -> None:
    """Refuse before uploading anything the server would refuse after."""
    if encrypted_size(plain_size) > max_size:
        raise RequestError(
            "attachment_too_large",
            f"the file is {plain_size} bytes; this server accepts at most {max_size} bytes",
            "path",
        )


class Transfers:
    """Moves attachment ciphertext to and from the server over one connection."""

    def __init__(
        self,
        *,
        store: UploadStore,
        staging_dir: Path,
        request: RequestFunction,
        start_request: StartFunction,
        report: ProgressReporter,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._store = store
        self._staging_dir = staging_dir
        self._request = request
        self._start = start_request
        self._report = report
        self._window = max(1, window)
        self._naming = threading.Lock()
        self._cancelled: set[str] = set()  # attachment ids the user gave up on

    def cancel(self, attachment_id: str) -> None:
        """Stop this upload before its next chunk (the message then fails)."""
        with self._naming:
            self._cancelled.add(attachment_id)

    def _check_cancelled(self, attachment_id: str) -> None:
        with self._naming:
            if attachment_id in self._cancelled:
                self._cancelled.discard(attachment_id)
                raise RequestError("upload_cancelled", "the upload was cancelled")

    # ------------------------------------------------------------------ upload

    def stage(
        self,
        source: Path,
        *,
        message_id: str,
        chat_kind: ChatKind,
        chat_id: str,
        kind: MessageKind,
        max_size: int,
    ) -> UploadState:
        """Check the size, encrypt `source` into the staging area and remember the upload."""
        source = Path(source)
        if not source.is_file():
            raise RequestError("file_not_found", f"no such file: {source.name}", "path")
        check_attachment_size(source.stat().st_size, max_size)
        attachment_id = uuid.uuid4().hex
        make_private_dir(self._staging_dir)
        staged = self._staging_dir / f"{attachment_id}.enc"
        encrypted = encrypt_file(source, staged, chunk_size=CHUNK_SIZE)
        state = UploadState(
            attachment_id=attachment_id,
            message_id=message_id,
            chat_kind=chat_kind,
            chat_id=chat_id,
            kind=kind,
            name=source.name,
            source_path=source.resolve(),
            encrypted_path=staged,
            size=encrypted.plain_size,
            key=encrypted.key,
            digest=encrypted.digest,
            chunk_size=encrypted.chunk_size,
        )
        self._store.save_upload(state)
        return state

    def upload(self, state: UploadState, piece_size: int, progress: Progress | None = None) -> None:
        """Send the staged ciphertext from wherever the server says it stopped."""
        total = encrypted_size(state.size, state.chunk_size)
        begun = self._request(
            MessageType.UPLOAD_BEGIN,
            {"attachment_id": state.attachment_id, "size": total, "digest": state.digest},
        )
        offset = begun.get("offset")
        if type(offset) is not int or not 0 <= offset <= total:
            raise RemoteProtocolError("UPLOAD_BEGIN replied with a bad offset")
        self._store.set_upload_offset(state.attachment_id, offset)
        self._progress(state.attachment_id, offset, total, "upload", progress)
        if offset < total:
            self._send_chunks(state, offset, total, max(1, piece_size), progress)

    def _send_chunks(
        self, state: UploadState, offset: int, total: int, piece: int, progress: Progress | None
    ) -> None:
        in_flight: deque[PendingRequest] = deque()
        position = offset
        with open(state.encrypted_path, "rb") as staged:
            staged.seek(offset)
            while position < total or in_flight:
                while position < total and len(in_flight) < self._window:
                    self._check_cancelled(state.attachment_id)
                    data = staged.read(min(piece, total - position))
                    if not data:
                        raise RequestError("file_changed", "the staged upload was truncated")
                    params = {
                        "attachment_id": state.attachment_id,
                        "offset": position,
                        "data": data,
                    }
                    in_flight.append(self._start(MessageType.UPLOAD_CHUNK, params))
                    position += len(data)
                reply = in_flight.popleft().result()
                confirmed = reply.get("offset")
                if type(confirmed) is not int or not 0 < confirmed <= total:
                    raise RemoteProtocolError("UPLOAD_CHUNK replied with a bad offset")
                self._store.set_upload_offset(state.attachment_id, confirmed)
                self._progress(state.attachment_id, confirmed, total, "upload", progress)

    def finish(self, state: UploadState) -> None:
        """The message naming the upload is safely queued: forget the staging copy."""
        self._store.remove_upload(state.attachment_id)
        with contextlib.suppress(FileNotFoundError):
            state.encrypted_path.unlink()

    # ------------------------------------------------------------------ download

    def download(
        self,
        attachment: Attachment,
        dest_dir: Path,
        piece_size: int,
        progress: Progress | None = None,
    ) -> Path:
        """Fetch, check and decrypt `attachment` into `dest_dir`; returns the new file."""
        decryptor = AttachmentDecryptor(attachment.key, attachment.size, attachment.chunk_size)
        dest_dir = Path(dest_dir)
        if not dest_dir.exists():
            make_private_dir(dest_dir)  # a folder the user already has keeps its mode
        temp = dest_dir / f".{attachment.attachment_id}.{os.urandom(4).hex()}.part"
        try:
            # 0600 from creation: os.replace keeps this mode for the final file.
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                self._decrypt_stream(attachment, decryptor, out.write, piece_size, progress)
                out.flush()
                os.fsync(out.fileno())
            with self._naming:  # pick a free name and take it before anyone else can
                final = media.safe_download_path(dest_dir, attachment.name)
                os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return final

    def _decrypt_stream(
        self,
        attachment: Attachment,
        decryptor: AttachmentDecryptor,
        write: Callable[[bytes], object],
        piece_size: int,
        progress: Progress | None,
    ) -> None:
        digest = hashlib.sha256()
        buffer = bytearray()
        index = 0
        for data in self._fetch(
            attachment.attachment_id, decryptor.encrypted_size, piece_size, progress
        ):
            digest.update(data)
            buffer += data
            while index < decryptor.chunk_count:
                _, length = decryptor.cipher_chunk_span(index)
                if len(buffer) < length:
                    break
                write(decryptor.decrypt_chunk(index, bytes(buffer[:length])))
                del buffer[:length]
                index += 1
        complete = index == decryptor.chunk_count and not buffer
        if not complete or not constant_time_equal(digest.digest(), attachment.digest):
            raise CryptoError("the downloaded attachment failed verification")

    def _fetch(
        self, attachment_id: str, total: int, piece_size: int, progress: Progress | None
    ) -> Iterator[bytes]:
        """Ciphertext in order, `window` DOWNLOAD_CHUNK requests in flight."""
        piece = max(1, piece_size)
        in_flight: deque[tuple[int, int, PendingRequest]] = deque()
        requested = received = 0
        while received < total:
            while requested < total and len(in_flight) < self._window:
                length = min(piece, total - requested)
                params = {"attachment_id": attachment_id, "offset": requested, "length": length}
                in_flight.append(
                    (requested, length, self._start(MessageType.DOWNLOAD_CHUNK, params))
                )
                requested += length
            offset, length, pending = in_flight.popleft()
            data = self._chunk_data(pending.result(), total)
            while len(data) < length:  # the server may cap a range: fetch the rest now
                params = {
                    "attachment_id": attachment_id,
                    "offset": offset + len(data),
                    "length": length - len(data),
                }
                more = self._chunk_data(self._request(MessageType.DOWNLOAD_CHUNK, params), total)
                if not more:
                    raise RemoteProtocolError("DOWNLOAD_CHUNK returned no data")
                data += more
            if len(data) != length:
                raise RemoteProtocolError("DOWNLOAD_CHUNK returned more than asked")
            received += length
            self._progress(attachment_id, received, total, "download", progress)
            yield data

    @staticmethod
    def _chunk_data(reply: dict[str, Any], total: int) -> bytes:
        data, size = reply.get("data"), reply.get("size")
        if not isinstance(data, bytes) or size != total:
            raise CryptoError("the server's copy of the attachment has the wrong size")
        return data

    def _progress(
        self, attachment_id: str, done: int, total: int, direction: str, progress: Progress | None
    ) -> None:
        self._report(attachment_id, done, total, direction)
        if progress is not None:
            progress(done, total)
