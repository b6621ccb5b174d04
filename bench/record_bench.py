"""Record-layer throughput: seal + open of one record, per MAC and payload size.

Prints one JSON object; for each MAC algorithm and payload size, `median_records_per_s`
is the median over the repeats of RecordSender.seal + header parse + RecordReceiver.open
round trips per second on one core (`median_mb_per_s` is the payload rate;
`median_records_per_cpu_s` divides by CPU time instead, steadier on a busy machine).

    python -m bench record [--repeats 7] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from common.crypto.record import MAC_ALGORITHMS, RecordReceiver, RecordSender
from common.protocol.framing import HEADER, HEADER_SIZE, Frame

PAYLOAD_SIZES = {"200B": 200, "256KiB": 256 * 1024}


def _to_frame(data: bytes) -> Frame:
    """What FrameDecoder does once a whole frame is buffered, minus the buffering."""
    _, pad, iv, mac = HEADER.unpack_from(data)
    return Frame(pad=pad, iv=iv, mac=mac, body=data[HEADER_SIZE:])


def records_per_second(mac_alg: str, payload: bytes, seconds: float) -> tuple[float, float]:
    """Round trips per wall-clock second and per CPU second, read in batches.

    The CPU-time figure is the steadier one on a shared, loaded machine.
    """
    enc_key, mac_key = os.urandom(32), os.urandom(32)
    sender = RecordSender(enc_key, mac_key, mac_alg)
    receiver = RecordReceiver(enc_key, mac_key, mac_alg)
    batch = max(1, 2_000_000 // (len(payload) + 1000))
    done = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            receiver.open(_to_frame(sender.seal(payload)))
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            cpu = max(time.process_time() - cpu_start, 1e-9)
            return done / (now - start), done / cpu


def measure(mac_alg: str, size: int, repeats: int, seconds: float) -> dict[str, float]:
    payload = os.urandom(size)
    records_per_second(mac_alg, payload, min(0.1, seconds))  # warm-up
    samples = [records_per_second(mac_alg, payload, seconds) for _ in range(repeats)]
    wall = [sample[0] for sample in samples]
    cpu = [sample[1] for sample in samples]
    median = statistics.median(wall)
    return {
        "median_records_per_s": round(median),
        "min_records_per_s": round(min(wall)),
        "max_records_per_s": round(max(wall)),
        "median_mb_per_s": round(median * size / 1e6, 1),
        "median_records_per_cpu_s": round(statistics.median(cpu)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="duration of one repeat")
    args = parser.parse_args(argv)

    results = {
        mac_alg: {
            label: measure(mac_alg, size, args.repeats, args.seconds)
            for label, size in PAYLOAD_SIZES.items()
        }
        for mac_alg in MAC_ALGORITHMS
    }
    print(
        json.dumps(
            {
                "benchmark": "record seal + open (AES-256-CBC, encrypt-then-MAC)",
                "repeats": args.repeats,
                "seconds_per_repeat": args.seconds,
                "results": results,
                "python": platform.python_version(),
            },
            indent=2,
        )
    )
    return 0
