"""Fuzz the network-facing decoders: codec `decode`, `decode_message`, `FrameDecoder`.

Oracle: only `RemoteProtocolError` may escape, and whatever is accepted must be exactly
what the encoder produces again (every value has one encoding; frames and handshake
frames re-encode to the same bytes; frames do not depend on how the stream is split).

With atheris installed this is a coverage-guided libFuzzer run; libFuzzer flags pass
through (`-max_total_time=` defaults to 120 s, `-runs=`, corpus directories...).
Without atheris, or with `--random`, a bounded random-mutation loop runs the same oracle
for `-max_total_time` seconds. See README.md next to this file.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.opcodes import MessageType

try:
    import atheris

    HAVE_ATHERIS = True
except ImportError:  # the fallback loop below needs nothing but the standard library
    HAVE_ATHERIS = False

if HAVE_ATHERIS and "--random" not in sys.argv:
    with atheris.instrument_imports():
        from common.protocol import codec, framing, message
else:
    from common.protocol import codec, framing, message

DEFAULT_SECONDS = 120
FUZZ_MAX_BODY = 256  # a small cap so the fuzzer reaches the over-the-cap path easily
FUZZ_LIMITS = codec.Limits(max_size=4096, max_depth=6, max_items=64)


def seed_inputs() -> list[bytes]:
    """Valid encodings to mutate: typical messages, every type, frames of both kinds."""
    send = message.request(
        MessageType.SEND_MESSAGE,
        42,
        message_id="0f" * 16,
        target_type="user",
        target="bob",
        time=1_732_600_000_000,
        envelope=bytes(range(200)),
        attachments=[],
    )
    login_reply = message.reply(
        7,
        {
            "profile": {"username": "alice", "age": 30, "sex": "female"},
            "friends": [{"username": "bob", "online": True, "ip": "", "port": 0}],
            "limits": {"ratio": 0.5, "none": None, "nested": [[[]], {}]},
        },
    )
    values: list[Any] = [None, True, -1, 1.5, "你好", b"\x00\xff", [1, [2, [3]]], {"k": "v"}]
    record_frame = framing.encode_frame(16, bytes(range(16)), bytes(32), bytes(range(48)))
    return [
        message.encode_message(send),
        message.encode_message(login_reply),
        message.encode_message(message.error(3, "login_failed", "no", field="password")),
        *(codec.encode(value) for value in values),
        framing.encode_handshake_frame(message.encode_message(send)) + record_frame,
        record_frame,
    ]


SEEDS = seed_inputs()


# --------------------------------------------------------------------------- oracle


def check_decode(data: bytes) -> None:
    for limits in (codec.DEFAULT_LIMITS, FUZZ_LIMITS):
        try:
            value = codec.decode(data, limits)
        except RemoteProtocolError:
            continue
        if codec.encode(value) != data:
            raise AssertionError("decode accepted a non-canonical encoding")


def check_decode_message(data: bytes) -> None:
    try:
        decoded = message.decode_message(data)
    except RemoteProtocolError:
        return
    if message.encode_message(decoded) != data:
        raise AssertionError("decode_message accepted a non-canonical encoding")


def check_frames(data: bytes, chunk_sizes: bytes) -> None:
    """Any split of the stream gives the same frames (or the same failure), and every
    frame, and every handshake payload, re-encodes to exactly the bytes it came from."""
    whole, whole_failed = _feed(data, [max(len(data), 1)])
    sizes = [1 + size % 64 for size in chunk_sizes] or [1]
    split, split_failed = _feed(data, sizes)
    if whole_failed != split_failed or (not whole_failed and whole != split):
        raise AssertionError("frames depend on how the stream was split")
    for frames in (whole, split):
        wire = b"".join(_reencode(frame) for frame in frames)
        if wire != data[: len(wire)]:
            raise AssertionError("frames do not re-encode to the input")
    for frame in split:
        try:
            payload = framing.decode_handshake_frame(frame)
        except RemoteProtocolError:
            continue
        if framing.encode_handshake_frame(payload) != _reencode(frame):
            raise AssertionError("handshake frame does not round-trip")


def _reencode(frame: framing.Frame) -> bytes:
    """The frame's bytes via the validating encoder: a frame it refuses is a decoder bug."""
    if len(frame.body) > FUZZ_MAX_BODY:
        raise AssertionError("decoder returned a frame over the cap")
    try:
        return framing.encode_frame(frame.pad, frame.iv, frame.mac, frame.body)
    except LocalProtocolError as exc:
        raise AssertionError("decoder returned a frame the encoder refuses") from exc


def _feed(data: bytes, sizes: list[int]) -> tuple[list[framing.Frame], bool]:
    """Frames returned, and whether the decoder raised RemoteProtocolError."""
    decoder = framing.FrameDecoder(max_body=FUZZ_MAX_BODY)
    frames: list[framing.Frame] = []
    pos = 0
    index = 0
    try:
        while pos < len(data):
            size = sizes[index % len(sizes)]
            frames += decoder.receive_data(data[pos : pos + size])
            if decoder.buffered >= framing.HEADER_SIZE + FUZZ_MAX_BODY:
                raise AssertionError("decoder holds more than one capped frame")
            pos += size
            index += 1
    except RemoteProtocolError:
        return frames, True
    return frames, False


def mutate_seed(instructions: bytes) -> bytes:
    """Apply byte-coded edits to a seed: lets a byte fuzzer start from valid structure."""
    data = bytearray(SEEDS[instructions[0] % len(SEEDS)])
    for i in range(1, len(instructions) - 2, 3):
        op, where, arg = instructions[i], instructions[i + 1], instructions[i + 2]
        where = where * max(len(data), 1) // 256
        if op % 4 == 0 and where < len(data):
            data[where] ^= 1 << (arg % 8)
        elif op % 4 == 1:
            data.insert(where, arg)
        elif op % 4 == 2:
            del data[where : where + 1 + arg % 8]
        elif where < len(data):
            data[where] = arg
    return bytes(data)


def test_one_input(raw: bytes) -> None:
    """One fuzz case: the first byte picks raw bytes or an edited seed."""
    if not raw:
        return
    data = raw[1:] if raw[0] < 128 else mutate_seed(raw[1:] or b"\x00")
    check_decode(data)
    check_decode_message(data)
    check_frames(data, raw[-8:])


# --------------------------------------------------------------------------- runners


def random_case(rng: random.Random) -> bytes:
    """Fallback generator: seed edits, splices and random bytes, like libFuzzer's basics."""
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(64))
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randrange(1, 6)):
        if not data:
            break
        where = rng.randrange(len(data))
        edit = rng.randrange(6)
        if edit == 0:
            data[where] ^= 1 << rng.randrange(8)
        elif edit == 1:
            data[where:where] = rng.randbytes(rng.randrange(1, 5))
        elif edit == 2:
            del data[where:]
        elif edit == 3:
            del data[where : where + rng.randrange(1, 9)]
        elif edit == 4:
            data[where:where] = rng.choice(SEEDS)[: rng.randrange(64)]
        else:
            data[where : where + 4] = rng.randbytes(4)  # lengths are 4 bytes wide
    return bytes(data)


def run_random(seconds: float, seed: int) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    cases = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            data = random_case(rng)
            try:
                check_decode(data)
                check_decode_message(data)
                check_frames(data, rng.randbytes(4))
            except Exception:
                print(f"FAILED on input {data.hex()}", file=sys.stderr)
                raise
            cases += 1
    print(f"random-mutation fuzzing: {cases} cases in {seconds:g} s, no failure (seed {seed})")
    return 0


def max_total_time(argv: list[str]) -> float:
    for arg in argv:
        if arg.startswith("-max_total_time="):
            return float(arg.split("=", 1)[1])
    return DEFAULT_SECONDS


def main(argv: list[str]) -> int:
    use_random = "--random" in argv or not HAVE_ATHERIS
    argv = [arg for arg in argv if arg != "--random"]
    if use_random:
        if not HAVE_ATHERIS:
            print("atheris is not installed: using the random-mutation fallback", file=sys.stderr)
        return run_random(max_total_time(argv), seed=int(time.time()))
    if not any(arg.startswith("-max_total_time=") for arg in argv):
        argv.append(f"-max_total_time={DEFAULT_SECONDS}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
