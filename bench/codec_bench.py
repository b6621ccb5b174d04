"""Codec throughput on the server's hot path: one SEND_MESSAGE encoded and decoded.

Prints one JSON object; `median_ops_per_s` is the median over the repeats of
encode_message + decode_message round trips per CPU second (one core).

    python -m bench codec [--repeats 7] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from common.protocol.message import (
    Message,
    decode_message,
    encode_message,
    request,
)
from common.protocol.opcodes import MessageType


def typical_send_message() -> Message:
    """A one-to-one text message as the client sends it: one sealed 200-byte envelope."""
    return request(
        MessageType.SEND_MESSAGE,
        4711,
        message_id=os.urandom(16).hex(),
        target_type="user",
        target="bob",
        time=1_732_600_000_000,
        envelope=os.urandom(200),
        attachments=[],
    )


def ops_per_second(message: Message, seconds: float) -> float:
    """Round trips per CPU second, timed in batches so the clock is read rarely.

    CPU time of this process, not wall time: the figure is per core and stays meaningful
    on a shared 2-core machine where other jobs steal the CPU.
    """
    batch = 1000
    done = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            decode_message(encode_message(message))
        done += batch
        now = time.process_time()
        if now >= deadline:
            return done / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="duration of one repeat")
    args = parser.parse_args(argv)

    message = typical_send_message()
    encoded = encode_message(message)
    if decode_message(encoded) != message:
        raise SystemExit("codec round trip failed")
    ops_per_second(message, 0.1)  # warm-up
    samples = [ops_per_second(message, args.seconds) for _ in range(args.repeats)]
    print(
        json.dumps(
            {
                "benchmark": "codec encode_message+decode_message, SEND_MESSAGE",
                "encoded_bytes": len(encoded),
                "repeats": args.repeats,
                "seconds_per_repeat": args.seconds,
                "clock": "process CPU time (one core)",
                "median_ops_per_s": round(statistics.median(samples)),
                "min_ops_per_s": round(min(samples)),
                "max_ops_per_s": round(max(samples)),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )
    return 0
