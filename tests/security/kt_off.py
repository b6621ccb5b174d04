"""A server build with the key transparency proofs switched off, for the bench only.

`bench/key_transparency.py` compares login and certificate fetches with and without
the log in the same run; this hook (UCHAT_TEST_SERVER_HOOK) makes the "without":
replies carry no proof (for the certificate or the KEM key), so nothing is looked up,
hashed or signed for them. Appends still happen: they are the same in both servers.
"""

from __future__ import annotations

from typing import Any

from server.app import Server


def install(server: Server) -> None:
    def no_proof(username: str, certificate: bytes) -> dict[str, Any]:
        return {}

    def no_kem_proof(username: str, kem_key: bytes | None) -> None:
        return None

    setattr(server.services.transparency, "certificate_proof", no_proof)  # noqa: B010
    setattr(server.services.transparency, "kem_key_proof", no_kem_proof)  # noqa: B010
