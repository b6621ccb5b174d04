"""Sending: texts, images and files, sealed end to end on our sender chain.

Why it exists: a message goes out as ONE envelope for the whole conversation (the
friend, or every room member), sealed on our chain for that conversation
(`client.core.chains`), with the chain's state sealed to each member that lacks it;
the body names its conversation and, for a room, the hash of the member list it was
sealed for. Attachments are encrypted and uploaded (resumably) before the message
naming them is queued; a queued message is resealed (on the next chain iteration)
when the room's members changed. All of it lands in the session's outbox, which owns
retries and statuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from client.core import media
from client.core.binding import bind_chat
from client.core.bodies import MAX_NAME_LENGTH, check_style, text_body
from client.core.chains import direct_conversation, room_conversation
from client.core.contacts import Target, chat_of, misused_room_id
from client.core.event_types import MessageSent
from client.core.events import Emit
from client.core.models import Attachment, ChatKind, ChatMessage, MessageKind
from client.core.session import Session, SessionSlot, report_status
from client.core.store import UploadState
from client.core.transfers import Progress
from client.core.transparency import with_tree_head
from client.core.trust import Identity
from common.errors import ConnectionLost, RequestError, RequestTimeout
from common.protocol.ids import time_ordered_id

log = logging.getLogger(__name__)
# The server takes envelopes of at most 64 KiB; sealing adds about 200 bytes.
MAX_TEXT_BYTES = 60_000

AttachmentBody = Callable[[str, Attachment], bytes]


def now_ms() -> int:
    return int(time.time() * 1000)


def attachment_of(state: UploadState) -> Attachment:
    """The attachment an upload carries, as sealed into its message."""
    return Attachment(
        state.attachment_id,
        state.name[:MAX_NAME_LENGTH],
        state.size,
        state.key,
        state.digest,
        state.chunk_size,
        local_path=state.source_path,
    )


class Outgoing:
    """Builds, seals and queues outgoing messages of the current session."""

    def __init__(
        self,
        *,
        slot: SessionSlot,
        emit: Emit,
        remember: Callable[[ChatMessage], None],
        attachment_body: AttachmentBody,
    ) -> None:
        self._slot = slot
        self._emit = emit
        self._remember = remember
        self._attachment_body = attachment_body

    def send_text(self, target: Target, text: str, font_size: int, color: str) -> ChatMessage:
        """Seal, store (`sending`), queue, send; see `ChatClient.send_text`."""
        session, identity = self._slot.require_sender()
        if not text.strip():
            raise RequestError("empty_message", "there is nothing to send", "text")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise RequestError(
                "message_too_large",
                f"a message may hold at most {MAX_TEXT_BYTES:,} bytes of text",
                "text",
            )
        check_style(font_size, color)
        chat_kind, chat_id = _resolve(session, target)
        message = ChatMessage(
            time_ordered_id(),
            chat_kind,
            chat_id,
            session.username,
            now_ms(),
            "text",
            text=text,
            font_size=font_size,
            color=color,
            outgoing=True,
            status="sending",
        )
        params = self._seal_params(session, identity, message, text_body(text, font_size, color))
        sent = session.outbox.submit(message, params)
        self._emit(MessageSent(sent))
        return sent

    def _seal_params(
        self,
        session: Session,
        identity: Identity,
        message: ChatMessage,
        body: bytes,
        attachments: Sequence[str] = (),
        *,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """SEND_MESSAGE params: one envelope on our chain, plus the distributions it needs."""
        session.transparency.check_usable()  # a refused key log blocks every chat
        if session.chains is None:
            raise RequestError("key_missing", "this computer does not hold your private keys")
        sealed_body = with_tree_head(
            bind_chat(body, message.chat_kind, message.chat_id),
            session.transparency.gossip_head(),
        )
        target: str | int
        member_hash: bytes | None = None
        if message.chat_kind == "user":
            recipients = session.recipients.direct(message.chat_id, refresh=refresh)
            target = next(iter(recipients))
            conversation = direct_conversation(session.username, target)
        else:
            target = int(message.chat_id)
            recipients, member_hash = session.recipients.room(
                target, session.username, refresh=refresh
            )
            conversation = room_conversation(target)
        sealed = session.chains.seal(
            conversation=conversation,
            recipients=recipients,
            body=sealed_body,
            member_hash=member_hash,
            sent_ms=message.time,
            redistribute=refresh,
        )
        params: dict[str, Any] = {
            "message_id": message.message_id,
            "target_type": message.chat_kind,
            "target": target,
            "time": message.time,
            "envelope": sealed.envelope,
            "distributions": sealed.distributions,
            "attachments": list(attachments),
        }
        if member_hash is not None:
            params["member_hash"] = member_hash
        return params

    def rebuild_params(self, message: ChatMessage, params: dict[str, Any]) -> dict[str, Any]:
        """The recipients changed since sealing: seal the stored message for the new set."""
        session, identity = self._slot.require_sender()
        if message.attachment is not None:
            body = self._attachment_body(message.kind, message.attachment)
        else:
            body = text_body(message.text, message.font_size, message.color)
        attachments = params.get("attachments") or []
        return self._seal_params(session, identity, message, body, attachments, refresh=True)

    # ---------------------------------------------------------------- attachments

    def send_image(self, target: Target, path: Path, progress: Progress | None) -> ChatMessage:
        """Like `send_file`, shown inline; a file that is not a safe image goes as a file."""
        kind: MessageKind = "image" if media.detect_image(path) is not None else "file"
        return self.send_attachment(target, path, kind, progress)

    def send_attachment(
        self, target: Target, path: Path, kind: MessageKind, progress: Progress | None
    ) -> ChatMessage:
        """Encrypt and stage `path`, store the message (`sending`), upload, then send."""
        session, _ = self._slot.require_sender()
        chat_kind, chat_id = _resolve(session, target)
        message_id = time_ordered_id()
        state = session.transfers.stage(
            path,
            message_id=message_id,
            chat_kind=chat_kind,
            chat_id=chat_id,
            kind=kind,
            max_size=session.limits.max_attachment_size,
        )
        message = ChatMessage(
            message_id,
            chat_kind,
            chat_id,
            session.username,
            now_ms(),
            kind,
            attachment=attachment_of(state),
            outgoing=True,
            status="sending",
        )
        session.store.add_message(message)
        self._remember(message)
        self._emit(MessageSent(message))
        return self._complete_upload(session, state, progress)

    def _complete_upload(
        self, session: Session, state: UploadState, progress: Progress | None
    ) -> ChatMessage:
        """Upload what the server lacks, then queue and send the message naming it."""
        with session.uploads_lock:
            if state.attachment_id in session.active_uploads:
                stored = session.store.get_message(state.message_id)
                if stored is None:
                    raise RequestError("upload_busy", "this upload is already running")
                return stored
            session.active_uploads.add(state.attachment_id)
        try:
            return self._upload_and_send(session, state, progress)
        finally:
            with session.uploads_lock:
                session.active_uploads.discard(state.attachment_id)

    def _upload_and_send(
        self, session: Session, state: UploadState, progress: Progress | None
    ) -> ChatMessage:
        _, identity = self._slot.require_sender()
        attachment = attachment_of(state)
        stored = session.store.get_message(state.message_id)
        message = stored or ChatMessage(
            state.message_id,
            state.chat_kind,
            state.chat_id,
            session.username,
            now_ms(),
            state.kind,
            attachment=attachment,
            outgoing=True,
            status="sending",
        )
        try:
            session.transfers.upload(state, session.limits.chunk_size, progress)
            body = self._attachment_body(state.kind, attachment)
            params = self._seal_params(session, identity, message, body, [state.attachment_id])
        except (ConnectionLost, RequestTimeout):
            return message  # resumed after the next login
        except RequestError:
            session.transfers.finish(state)
            session.store.set_status(state.message_id, "failed")
            report_status(session, state.message_id, self._emit)
            raise
        try:
            return session.outbox.submit(message, params)
        finally:
            session.transfers.finish(state)

    def resume_uploads(self, session: Session) -> None:
        """After a login: finish the uploads a drop or a restart interrupted."""
        for state in session.store.pending_uploads():
            if not state.encrypted_path.is_file():
                session.store.remove_upload(state.attachment_id)
                session.store.set_status(state.message_id, "failed")
                report_status(session, state.message_id, self._emit)
                continue
            try:
                self._complete_upload(session, state, None)
            except RequestError as exc:
                log.info("resumed upload refused: %s", exc.code)


def _resolve(session: Session, target: Target) -> tuple[ChatKind, str]:
    """The conversation to send to, with a friend's name spelled as the server has it.

    The server treats names case-insensitively but certificates carry the exact
    spelling; without this, "Bob" for friend "bob" would look like a forged key.
    """
    if misused_room_id(session.contacts, target):
        raise RequestError("invalid_target", f"a room id is an int: pass {target}", "target")
    chat_kind, chat_id = chat_of(target)
    if chat_kind == "user":
        chat_id = session.contacts.friend_named(chat_id) or chat_id
    return chat_kind, chat_id
