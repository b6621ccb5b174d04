"""Sans-IO framing: bytes in any split -> whole frames.

Frame layout (network byte order), as in the original design::

    | body length (4) | pad length (1) | IV (16) | MAC (32) | body |

The decoder checks the length from the 53-byte header alone, before buffering any
body, so a peer can never make us hold more than one capped frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from common.errors import LocalProtocolError, RemoteProtocolError

HEADER = struct.Struct("!IB16s32s")
HEADER_SIZE = HEADER.size  # 53
BLOCK_SIZE = 16
HANDSHAKE_MARKER = 0x80
ZERO_IV = bytes(16)
ZERO_MAC = bytes(32)
DEFAULT_MAX_BODY = 1024 * 1024 + 64 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as read off the wire; `body` is ciphertext for records."""

    pad: int
    iv: bytes
    mac: bytes
    body: bytes

    @property
    def is_handshake(self) -> bool:
        return self.pad & HANDSHAKE_MARKER != 0

    @property
    def header(self) -> bytes:
        return HEADER.pack(len(self.body), self.pad, self.iv, self.mac)


def encode_frame(pad: int, iv: bytes, mac: bytes, body: bytes) -> bytes:
    """Serialise a frame; raises LocalProtocolError on a malformed one."""
    if len(iv) != 16 or len(mac) != 32 or not 0 <= pad <= 0xFF:
        raise LocalProtocolError("malformed frame fields")
    if not body or len(body) % BLOCK_SIZE:
        raise LocalProtocolError("frame body must be a non-empty multiple of 16 bytes")
    return HEADER.pack(len(body), pad, iv, mac) + body


def encode_handshake_frame(payload: bytes) -> bytes:
    """Wrap a plaintext handshake message, zero-padded to a block multiple.

    An empty payload is refused: with at most 15 padding bytes it cannot be told apart
    from a one-byte payload, so it would not round-trip.
    """
    if not payload:
        raise LocalProtocolError("handshake payload must not be empty")
    padding = (-len(payload)) % BLOCK_SIZE
    return encode_frame(HANDSHAKE_MARKER | padding, ZERO_IV, ZERO_MAC, payload + bytes(padding))


def decode_handshake_frame(frame: Frame) -> bytes:
    """Return the plaintext of a handshake frame, checking its marker and padding."""
    if not frame.is_handshake or frame.pad & 0x7F >= BLOCK_SIZE:
        raise RemoteProtocolError("expected a handshake frame")
    if frame.iv != ZERO_IV or frame.mac != ZERO_MAC:
        raise RemoteProtocolError("handshake frame has non-zero IV or MAC")
    padding = frame.pad & 0x7F
    if padding and frame.body[-padding:] != bytes(padding):
        raise RemoteProtocolError("bad handshake padding")
    return frame.body[: len(frame.body) - padding]


class FrameDecoder:
    """Accumulates bytes and yields complete frames.

    `max_body` caps one frame's body; anything larger is rejected from its header.
    """

    __slots__ = ("_buffer", "_max_body", "_need")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self._max_body = max_body
        self._buffer = bytearray()
        self._need: int | None = None  # body length of the frame being read

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def max_body(self) -> int:
        return self._max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        """Change the cap for frames whose header has not been read yet."""
        self._max_body = value

    @property
    def frame_ready(self) -> bool:
        """True if the buffer holds a whole frame not handed out yet (`limit` left it).

        A bad header also counts: taking the frame is what refuses it.
        """
        buffered = len(self._buffer)
        if buffered < HEADER_SIZE:
            return False
        need = self._need if self._need is not None else int.from_bytes(self._buffer[:4], "big")
        bad = need == 0 or need % BLOCK_SIZE != 0 or need > self._max_body
        return bad or buffered >= HEADER_SIZE + need

    def receive_data(self, data: bytes, limit: int | None = None) -> list[Frame]:
        """Feed bytes (any split); return the frames they complete, `limit` at most.

        Whole frames past `limit` stay buffered (still counted in `buffered`) until a
        later call takes them: a server opens a pipelined read a share at a time.
        """
        self._buffer += data
        frames: list[Frame] = []
        while limit is None or len(frames) < limit:
            frame = self._next_frame()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _next_frame(self) -> Frame | None:
        if self._need is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            length = int.from_bytes(self._buffer[:4], "big")
            if length == 0 or length % BLOCK_SIZE:
                raise RemoteProtocolError("frame length is not a positive multiple of 16")
            if length > self._max_body:
                raise RemoteProtocolError("frame length exceeds the limit")
            self._need = length
        total = HEADER_SIZE + self._need
        if len(self._buffer) < total:
            return None
        _, pad, iv, mac = HEADER.unpack_from(self._buffer)
        with memoryview(self._buffer) as view:  # copy the body once, release before resizing
            body = bytes(view[HEADER_SIZE:total])
        del self._buffer[:total]  # O(1) amortised: bytearray drops a prefix in place
        self._need = None
        return Frame(pad=pad, iv=iv, mac=mac, body=body)
