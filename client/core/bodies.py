"""The sealed message bodies: what a text or attachment message carries, both ways.

A body is a codec dict encoded once by the sender (`text_body`, `attachment_body`);
`Delivery` checks the shape of one NEW_MESSAGE entry and turns an opened body into a
`ChatMessage`, refusing one sealed for another conversation than the one it is
delivered as (`client.core.binding`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from client.core.binding import chat_matches
from client.core.models import Attachment, ChatKind, ChatMessage
from common.errors import ProtocolError, RemoteProtocolError, RequestError
from common.protocol import codec

log = logging.getLogger(__name__)

UNDECRYPTABLE_TEXT = "\u26a0 This message could not be decrypted."
COLOR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
MIN_FONT_SIZE = 6
MAX_FONT_SIZE = 72
MAX_NAME_LENGTH = 255
MAX_ATTACHMENT_CHUNK = 16 * 1024 * 1024
ATTACHMENT_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
BODY_LIMITS = codec.Limits(max_size=1_179_648, max_depth=2, max_items=32)


def text_body(text: str, font_size: int, color: str) -> bytes:
    """The codec dict sealed for a text message (docs/protocol.md)."""
    return codec.encode({"kind": "text", "text": text, "font_size": font_size, "color": color})


def attachment_body(kind: str, attachment: Attachment) -> bytes:
    """The codec dict sealed for an image or file message."""
    return codec.encode(
        {
            "kind": kind,
            "attachment_id": attachment.attachment_id,
            "name": attachment.name,
            "size": attachment.size,
            "key": attachment.key,
            "digest": attachment.digest,
            "chunk_size": attachment.chunk_size,
        }
    )


def check_style(font_size: int, color: str) -> None:
    """Refuse styles a peer would reject, before anything is sealed."""
    if type(font_size) is not int or not MIN_FONT_SIZE <= font_size <= MAX_FONT_SIZE:
        raise RequestError(
            "invalid_font_size", f"font size must be {MIN_FONT_SIZE}..{MAX_FONT_SIZE}"
        )
    if not isinstance(color, str) or not COLOR_PATTERN.fullmatch(color):
        raise RequestError("invalid_color", "colour must look like #rrggbb")


@dataclass(frozen=True)
class Delivery:
    """One validated entry of a NEW_MESSAGE push."""

    message_id: str
    sender: str
    target_type: ChatKind
    target: str | int
    time: int
    envelope: bytes
    attachments: tuple[str, ...]
    distribution: bytes | None = None  # the sender's chain state sealed to us, if it came

    @property
    def chat_id(self) -> str:
        return self.sender if self.target_type == "user" else str(self.target)

    @staticmethod
    def parse(raw: Any) -> Delivery:
        """Check the shape; RemoteProtocolError if the server sent nonsense."""
        if not isinstance(raw, dict):
            raise RemoteProtocolError("a delivery must be a dict")
        message_id, sender = raw.get("message_id"), raw.get("sender")
        target, sent_at, envelope = raw.get("target"), raw.get("time"), raw.get("envelope")
        attachments = raw.get("attachments", [])
        distribution = raw.get("distribution")
        if distribution is not None and not isinstance(distribution, bytes):
            raise RemoteProtocolError("malformed delivery: distribution")
        if not isinstance(message_id, str) or not isinstance(sender, str):
            raise RemoteProtocolError("malformed delivery: ids")
        if type(sent_at) is not int or not isinstance(envelope, bytes):
            raise RemoteProtocolError("malformed delivery: time or envelope")
        if not isinstance(attachments, list) or not all(isinstance(a, str) for a in attachments):
            raise RemoteProtocolError("malformed delivery: attachments")
        target_type: ChatKind
        if raw.get("target_type") == "user" and isinstance(target, str):
            target_type = "user"
        elif raw.get("target_type") == "room" and type(target) is int:
            target_type = "room"
        else:
            raise RemoteProtocolError("malformed delivery: target")
        return Delivery(
            message_id,
            sender,
            target_type,
            target,
            sent_at,
            envelope,
            tuple(attachments),
            distribution,
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form again (what `parse` takes), for deliveries held in the store."""
        value: dict[str, Any] = {
            "message_id": self.message_id,
            "sender": self.sender,
            "target_type": self.target_type,
            "target": self.target,
            "time": self.time,
            "envelope": self.envelope,
            "attachments": list(self.attachments),
        }
        if self.distribution is not None:
            value["distribution"] = self.distribution
        return value

    def undecryptable(self) -> ChatMessage:
        """What is stored (and shown) when the envelope cannot be opened or understood."""
        return ChatMessage(
            self.message_id,
            self.target_type,
            self.chat_id,
            self.sender,
            self.time,
            "text",
            text=UNDECRYPTABLE_TEXT,
        )

    def to_message(self, body: bytes, recipient: str) -> ChatMessage:
        """Decode a body `recipient` opened; RemoteProtocolError if it breaks the protocol
        or was sealed for another conversation than the one it is delivered as."""
        try:
            value = codec.decode(body, BODY_LIMITS)
        except ProtocolError as exc:
            raise RemoteProtocolError("sealed body is not a codec dict") from exc
        if not isinstance(value, dict):
            raise RemoteProtocolError("sealed body is not a dict")
        if not chat_matches(value.get("chat"), self.target_type, self.target, recipient):
            log.warning("refusing message %r: sealed for another conversation", self.message_id)
            raise RemoteProtocolError("sealed conversation differs from the delivery's")
        kind = value.get("kind")
        base = (self.message_id, self.target_type, self.chat_id, self.sender, self.time)
        if kind == "text":
            text, size, color = value.get("text"), value.get("font_size"), value.get("color")
            if not isinstance(text, str) or type(size) is not int or not isinstance(color, str):
                raise RemoteProtocolError("malformed text body")
            try:
                check_style(size, color)
            except RequestError as exc:
                raise RemoteProtocolError(exc.message) from exc
            return ChatMessage(*base, "text", text=text, font_size=size, color=color)
        if kind in ("image", "file"):
            attachment = _attachment(value)
            if attachment.attachment_id not in self.attachments:
                raise RemoteProtocolError("sealed attachment is not listed in the delivery")
            return ChatMessage(*base, "image" if kind == "image" else "file", attachment=attachment)
        raise RemoteProtocolError("unknown sealed body kind")


def _attachment(value: dict[str, Any]) -> Attachment:
    attachment_id, name, size = value.get("attachment_id"), value.get("name"), value.get("size")
    key, digest, chunk_size = value.get("key"), value.get("digest"), value.get("chunk_size")
    if not isinstance(attachment_id, str) or not ATTACHMENT_ID_PATTERN.fullmatch(attachment_id):
        raise RemoteProtocolError("malformed attachment id")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise RemoteProtocolError("malformed attachment name")
    if not isinstance(key, bytes) or not isinstance(digest, bytes):
        raise RemoteProtocolError("malformed attachment key")
    if len(key) != 32 or len(digest) != 32:
        raise RemoteProtocolError("malformed attachment key")
    if type(size) is not int or type(chunk_size) is not int or size < 0:
        raise RemoteProtocolError("malformed attachment size")
    if not 0 < chunk_size <= MAX_ATTACHMENT_CHUNK:  # bounds what one chunk can buffer
        raise RemoteProtocolError("attachment chunk size out of range")
    return Attachment(attachment_id, name, size, key, digest, chunk_size)
