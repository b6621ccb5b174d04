"""SecureChannel: handshake + records + codec in one sans-IO object.

Feed it the bytes the socket gave you; it returns whole decoded messages. Give it a
message; it returns the bytes to write. Bytes the handshake produces while
receiving wait in `data_to_send()`. It never touches a socket, so the same object
runs in the server's reactor, the client's socket thread and the tests.

Any error (`RemoteProtocolError`, `CryptoError`, `HandshakeError`) leaves the
channel dead: the owner closes that one connection.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from enum import Enum, auto

from common.crypto.certs import ServerIdentity
from common.crypto.handshake import (
    HANDSHAKE_LIMITS,
    ClientHandshake,
    RandomSource,
    ServerHandshake,
    SessionKeys,
)
from common.crypto.record import MAC_ALGORITHMS, RecordReceiver, RecordSender
from common.errors import LocalProtocolError, RemoteProtocolError, UchatError
from common.protocol import codec
from common.protocol.framing import (
    BLOCK_SIZE,
    DEFAULT_MAX_BODY,
    Frame,
    FrameDecoder,
    decode_handshake_frame,
    encode_handshake_frame,
)
from common.protocol.message import Message, decode_messages, encode_batch, encode_message

#: The largest handshake frame body: the handshake codec refuses bigger payloads, so a
#: peer gets no more buffer than that before Finished (padding adds under one block).
HANDSHAKE_MAX_FRAME = HANDSHAKE_LIMITS.max_size + BLOCK_SIZE


@functools.lru_cache(maxsize=16)
def _limits_for(max_frame: int) -> codec.Limits:
    """The decoding limits of a channel with this frame cap (frozen, so shared)."""
    return codec.Limits(max_size=max_frame)


class _State(Enum):
    START = auto()  # client: hello not sent yet
    AWAIT_SERVER_HELLO = auto()
    AWAIT_CLIENT_HELLO = auto()
    AWAIT_CLIENT_FINISHED = auto()
    ESTABLISHED = auto()
    FAILED = auto()


class SecureChannel:
    """One end of an encrypted, authenticated, ordered message stream.

    Slotted, like its record sender and receiver and its frame decoder: a server holds
    one per connection, and an instance dictionary each cost about 400 bytes a link.
    """

    __slots__ = (
        "_client",
        "_decoder",
        "_iv_source",
        "_limits",
        "_max_frame",
        "_outgoing",
        "_receiver",
        "_sender",
        "_server",
        "_state",
        "mac_alg",
        "peer_certificate_der",
        "peer_fingerprint",
    )

    def __init__(
        self,
        *,
        client: ClientHandshake | None = None,
        server: ServerHandshake | None = None,
        max_frame: int = DEFAULT_MAX_BODY,
        iv_source: RandomSource = os.urandom,
    ) -> None:
        self._client = client
        self._server = server
        self._decoder = FrameDecoder(min(max_frame, HANDSHAKE_MAX_FRAME))
        self._max_frame = max_frame
        self._limits = _limits_for(max_frame)  # one shared object per frame size
        self._iv_source = iv_source
        self._outgoing = bytearray()
        self._sender: RecordSender | None = None
        self._receiver: RecordReceiver | None = None
        self._state = _State.START if client else _State.AWAIT_CLIENT_HELLO
        self.peer_fingerprint: str | None = None
        self.peer_certificate_der: bytes | None = None
        self.mac_alg: str | None = None

    @classmethod
    def client(
        cls,
        expected_fingerprint: str | None = None,
        accepted_macs: Sequence[str] = MAC_ALGORITHMS,
        max_frame: int = DEFAULT_MAX_BODY,
        random: RandomSource = os.urandom,
    ) -> SecureChannel:
        handshake = ClientHandshake(expected_fingerprint, accepted_macs, random)
        return cls(client=handshake, max_frame=max_frame, iv_source=random)

    @classmethod
    def server(
        cls,
        identity: ServerIdentity,
        mac_alg: str = "hmac-sha256",
        max_frame: int = DEFAULT_MAX_BODY,
        random: RandomSource = os.urandom,
    ) -> SecureChannel:
        handshake = ServerHandshake(identity, mac_alg, random)
        return cls(server=handshake, max_frame=max_frame, iv_source=random)

    @property
    def established(self) -> bool:
        return self._state is _State.ESTABLISHED

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    @property
    def buffered_input(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return self._decoder.buffered

    @property
    def max_frame(self) -> int:
        """The cap on the body of the next frame (the handshake's until Finished)."""
        return self._decoder.max_body

    def limit_frames(self, max_frame: int) -> None:
        """Cap records from now on (a server keeps them small until LOGIN succeeds)."""
        self._max_frame = max_frame
        if self._state is _State.ESTABLISHED:
            self._decoder.max_body = max_frame

    def initiate(self) -> bytes:
        """Client only: the ClientHello frame to write first."""
        if self._client is None or self._state is not _State.START:
            raise LocalProtocolError("initiate() is for a new client channel")
        self._state = _State.AWAIT_SERVER_HELLO
        return encode_handshake_frame(self._client.hello())

    def data_to_send(self) -> bytes:
        """Bytes the handshake produced while receiving; empty when there are none."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def send(self, message: Message) -> bytes:
        """Encrypt one message into one record frame."""
        if self._sender is None or self._state is not _State.ESTABLISHED:
            raise LocalProtocolError("the channel is not established")
        return self._sender.seal(encode_message(message))

    def send_encoded(self, body: bytes) -> bytes:
        """Encrypt an already encoded message body: fan-out encodes a push only once."""
        if self._sender is None or self._state is not _State.ESTABLISHED:
            raise LocalProtocolError("the channel is not established")
        return self._sender.seal(body)

    def send_batch(self, bodies: list[bytes]) -> bytes:
        """Encrypt several encoded messages into ONE record (docs/protocol.md §3)."""
        return self.send_encoded(encode_batch(bodies))

    @property
    def records_waiting(self) -> bool:
        """True if whole frames wait unopened (`max_records` left them buffered)."""
        return self._decoder.frame_ready

    def receive_data(self, data: bytes, max_records: int | None = None) -> list[Message]:
        """Feed received bytes; return the messages they complete, in order.

        `max_records` bounds the frames opened in this call (a record may carry several
        messages); the rest wait, buffered, for a later call (`b""` will do). The server
        opens a pipelined read a share per loop turn this way, so one connection's
        256 KiB read never delays the others by its whole decryption.
        """
        if self._state is _State.FAILED:
            raise RemoteProtocolError("the channel has failed")
        try:
            messages: list[Message] = []
            for frame in self._decoder.receive_data(data, max_records):
                messages += self._on_frame(frame)
            return messages
        except UchatError:
            self._state = _State.FAILED
            raise
        except Exception as exc:  # a library surprise is still the peer's bad input
            self._state = _State.FAILED
            raise RemoteProtocolError(f"unexpected input ({type(exc).__name__})") from exc

    def _on_frame(self, frame: Frame) -> list[Message]:
        if self._state is _State.ESTABLISHED and self._receiver is not None:
            return decode_messages(self._receiver.open(frame), self._limits)
        if not frame.is_handshake:
            raise RemoteProtocolError("record received before the handshake completed")
        payload = decode_handshake_frame(frame)
        if self._state is _State.AWAIT_SERVER_HELLO and self._client is not None:
            self._on_server_hello(self._client, payload)
        elif self._state is _State.AWAIT_CLIENT_HELLO and self._server is not None:
            self._outgoing += encode_handshake_frame(self._server.receive_client_hello(payload))
            self._state = _State.AWAIT_CLIENT_FINISHED
        elif self._state is _State.AWAIT_CLIENT_FINISHED and self._server is not None:
            self._server.receive_client_finished(payload)
            self._establish(self._server.keys)
        else:
            raise RemoteProtocolError("unexpected handshake frame")
        return []

    def _on_server_hello(self, client: ClientHandshake, payload: bytes) -> None:
        finished = client.receive_server_hello(payload)
        self._outgoing += encode_handshake_frame(finished)
        self.peer_fingerprint = client.peer_fingerprint
        self.peer_certificate_der = client.peer_certificate_der
        self._establish(client.keys)

    def _establish(self, keys: SessionKeys | None) -> None:
        if keys is None:  # the handshake object always sets keys on success
            raise LocalProtocolError("handshake finished without keys")
        self._sender = RecordSender(keys.send_enc, keys.send_mac, keys.mac_alg, self._iv_source)
        self._receiver = RecordReceiver(keys.recv_enc, keys.recv_mac, keys.mac_alg)
        self.mac_alg = keys.mac_alg
        self._state = _State.ESTABLISHED
        self._decoder.max_body = self._max_frame
        # The handshake's keys, KEM ciphertexts and transcript (several KB) are done
        # with: a server holding 10,000 connections must not keep 10,000 of them.
        self._client = self._server = None
