"""Sender CPU per room message: one envelope on a sender chain vs one seal per member.

The previous client (end-to-end v1) sealed every room message once per member: X25519
with an ephemeral key and with the static key, HKDF, AES-CBC and HMAC, 499 times for a
500-member room. Now the sender seals ONE envelope v2 on its chain (HMAC ratchet step,
HKDF, AES-CBC, HMAC, one Ed25519 signature) and HPKE-seals the chain's state only to
members that lack it: everyone when a chain starts or rotates (after a member left, or
every `RotationPolicy.max_messages`), newcomers otherwise.

Both paths are measured here in the same process on the same body, including the
encoding of the SEND_MESSAGE params, as CPU seconds per message (`time.process_time`).
The chain state is written to an in-memory record store: the local SQLite write (one
small row, committed) is I/O, not the crypto being compared.

    python -m bench sender_cpu [--members 500] [--messages 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

from client.core.binding import bind_chat
from client.core.bodies import text_body
from client.core.chains import ChainBook, room_conversation
from client.core.kem_keys import new_user_keys, signed_current
from common.crypto.certs import (
    ServerIdentity,
    UserCertificate,
    build_csr,
    issue_certificate,
    load_user_certificate,
    verify_csr,
)
from common.crypto.e2e import seal
from common.crypto.kem import SignedKemKey
from common.crypto.membership import member_list_hash
from common.crypto.sender_chain import RotationPolicy
from common.protocol import codec


class Records:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], bytes] = {}

    def load_chain(self, role: str, conversation: str, sender: str) -> bytes | None:
        return self.rows.get((role, conversation, sender))

    def save_chain(self, role: str, conversation: str, sender: str, sealed: bytes) -> None:
        self.rows[(role, conversation, sender)] = sealed


def cpu_per_call(fn: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=500, help="room size, sender included")
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--rotations", type=int, default=3, help="chain starts measured")
    args = parser.parse_args(argv)

    ca = ServerIdentity.create()
    sender_keys = new_user_keys(1)
    sender_der = issue_certificate(ca, verify_csr(build_csr("sender", "s@x.org", sender_keys)))
    sender_fp = load_user_certificate(sender_der, ca.certificate).fingerprint
    names = [f"member{i}" for i in range(args.members - 1)]
    certificates: dict[str, UserCertificate] = {}
    kem_keys: dict[str, SignedKemKey | None] = {}
    for name in names:
        keys = new_user_keys(1)
        der = issue_certificate(ca, verify_csr(build_csr(name, f"{name}@x.org", keys)))
        certificates[name] = load_user_certificate(der, ca.certificate)
        kem_keys[name] = signed_current(keys)
    body = bind_chat(text_body("七点见 🍜 " * 4, 12, "#1f2328"), "room", "7")

    def v1() -> bytes:
        message_id = os.urandom(16).hex()
        envelopes = {
            name: seal(sender_keys, sender_fp, certificate, message_id, body)
            for name, certificate in certificates.items()
        }
        params = {"message_id": message_id, "target_type": "room", "target": 7, "time": 0}
        return codec.encode({**params, "envelopes": envelopes, "attachments": []})

    book = ChainBook(
        username="sender",
        keys=sender_keys,
        records=Records(),
        policy=RotationPolicy(max_messages=10**9),
        clock=lambda: 1,
    )
    conversation = room_conversation(7)
    member_hash = member_list_hash("7", ["sender", *names])

    def v2() -> bytes:
        sealed = book.seal(
            conversation=conversation, recipients=kem_keys, body=body, member_hash=member_hash
        )
        params = {"message_id": os.urandom(16).hex(), "target_type": "room", "target": 7}
        return codec.encode(
            {
                **params,
                "time": 0,
                "envelope": sealed.envelope,
                "distributions": sealed.distributions,
                "member_hash": member_hash,
                "attachments": [],
            }
        )

    starts = []
    for index in range(args.rotations):  # a new conversation each time: a chain start
        fresh = room_conversation(1000 + index)
        starts += cpu_per_call(
            partial(book.seal, conversation=fresh, recipients=kem_keys, body=body), 1
        )
    v2()  # the chain of the measured conversation starts here, outside the samples
    old = cpu_per_call(v1, args.messages)
    new = cpu_per_call(v2, args.messages)
    old_ms, new_ms = statistics.median(old) * 1000, statistics.median(new) * 1000
    start_ms = statistics.median(starts) * 1000
    per_100 = (start_ms + 99 * new_ms) / 100  # a rotation every 100 messages (the default)
    print(
        json.dumps(
            {
                "benchmark": f"sender CPU per message to a {args.members}-member room",
                "members": args.members,
                "previous_per_member_seals_ms": round(old_ms, 3),
                "chain_envelope_ms": round(new_ms, 3),
                "chain_start_with_all_distributions_ms": round(start_ms, 3),
                "chain_amortised_over_100_messages_ms": round(per_100, 3),
                "ratio_steady": round(new_ms / old_ms, 4),
                "ratio_amortised": round(per_100 / old_ms, 4),
                "bar": "<= 1/20 = 0.05",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
