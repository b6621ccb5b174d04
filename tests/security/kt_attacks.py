"""A malicious server for key transparency tests: handlers swapped in a test build.

`server.app` imports this module when UCHAT_TEST_SERVER_HOOK names it and calls
`install(server)`. UCHAT_TEST_KT_ATTACK chooses the lie; it is told only to VICTIM
and only once the test creates the file `attack_on` in the data folder, so the users
can be set up honestly first:

- `unlogged`: a second key for TARGET, certified by the CA, served with the proof of
  TARGET's real key (the log does not hold the forged one);
- `logged`: the same forged key, appended to the real log (so the victim's checks
  pass, and the target's monitoring must see it);
- `fork`: the forged key in a forked log shown to the victim only (a split view);
- `rollback`: the victim is shown an older signed head than one it already holds;
- `kem_swap`: TARGET's certificate is honest, but the KEM key beside it is one the
  server made and signed with another identity key, appended to the real log (so the
  log checks pass and only the identity signature can catch it);
- `kem_unlogged`: the same swapped KEM key, served with no proof (the log lacks it).
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

from common.crypto import merkle
from common.crypto.certs import CsrInfo, issue_certificate
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import generate_user_keys
from common.crypto.merkle import LogEntry, MemoryTree, TreeHead
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.app import Server
from server.dispatch import Context
from server.handlers import certificate, kt_consistency, kt_tree_head, kt_user_entries
from server.storage import keylog, users

VICTIM = "alice"
TARGET = "carol"


class Attack:
    def __init__(self, server: Server, mode: str) -> None:
        self.mode = mode
        self.data_dir = Path(server.config.data_dir)
        self.forged: bytes | None = None
        self.forged_kem: bytes | None = None  # signed by the forged identity, as an attacker would
        self.fork: MemoryTree | None = None
        self.fork_head: TreeHead | None = None
        self.swapped_kem: bytes | None = None

    def active(self, ctx: Context) -> bool:
        return ctx.username == VICTIM and (self.data_dir / "attack_on").exists()

    def forged_certificate(self, ctx: Context) -> bytes:
        if self.forged is None:
            real = users.by_username(ctx.db, TARGET)
            assert real is not None
            keys = generate_user_keys()
            info = CsrInfo(TARGET, real.email, keys.identity_public, keys.agreement_public)
            self.forged = issue_certificate(ctx.identity, info)
            self.forged_kem = SignedKemKey.sign(
                keys.identity, KemKeyPair.generate(), ctx.now()
            ).to_bytes()
            if self.mode == "logged":
                ctx.transparency.append("certificate", TARGET, self.forged)
                ctx.transparency.append("kem_key", TARGET, self.forged_kem)
        return self.forged

    def forked(self, ctx: Context) -> tuple[MemoryTree, TreeHead]:
        """The victim's private log: the real one so far, plus the forged key."""
        if self.fork is None or self.fork_head is None:
            tree = MemoryTree()
            for stored in keylog.entries(ctx.db, 0, keylog.size(ctx.db)):
                tree.append_leaf_hash(stored.entry.leaf_hash)
            tree.append_leaf_hash(
                LogEntry("certificate", TARGET, self.forged_certificate(ctx)).leaf_hash
            )
            assert self.forged_kem is not None
            tree.append_leaf_hash(LogEntry("kem_key", TARGET, self.forged_kem).leaf_hash)
            self.fork = tree
            self.fork_head = merkle.sign_tree_head(
                ctx.identity.key, tree.size, tree.root(), ctx.now()
            )
        return self.fork, self.fork_head

    def swapped_kem_key(self, ctx: Context) -> bytes:
        """A KEM key for TARGET signed by an identity key the server made (not TARGET's)."""
        if self.swapped_kem is None:
            server_made = generate_user_keys()
            self.swapped_kem = SignedKemKey.sign(
                server_made.identity, KemKeyPair.generate(), ctx.now()
            ).to_bytes()
            if self.mode == "kem_swap":
                ctx.transparency.append("kem_key", TARGET, self.swapped_kem)
        return self.swapped_kem

    def kem_swap(self, ctx: Context, honest: dict[str, Any]) -> dict[str, Any]:
        if honest["username"] != TARGET:
            return honest
        swapped = self.swapped_kem_key(ctx)
        proof = (
            ctx.transparency.kem_key_proof(TARGET, swapped)
            if self.mode == "kem_swap"
            else {"position": -1, "proof": []}
        )
        honest["transparency"] = ctx.transparency.certificate_proof(
            TARGET, honest["certificate"]
        )  # under the head that now holds the swapped key
        return {**honest, "kem_key": swapped, "kem_transparency": proof}

    # -- swapped handlers ---------------------------------------------------------------

    def certificate(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        honest: dict[str, Any] = certificate.handle(ctx, params)
        if not self.active(ctx):
            return honest
        if self.mode.startswith("kem_"):
            return self.kem_swap(ctx, honest)
        name, der = honest["username"], honest["certificate"]
        if self.mode == "rollback":
            position = keylog.latest_for(ctx.db, "certificate", name, der)
            assert position is not None
            head = next(h for h in keylog.heads(ctx.db) if h.size > position)
            proved = ctx.transparency.proof_for("certificate", name, der, head)
            return {**honest, "transparency": {"head": head.to_wire(), **proved}}
        # The attacker forges a KEM key with the certificate (signed by the forged
        # identity, logged with it), as it must for the victim to seal to it.
        if name == TARGET:
            der = self.forged_certificate(ctx)
        if self.mode == "fork":
            tree, head = self.forked(ctx)
            position = (
                tree.size - 2
                if name == TARGET
                else keylog.latest_for(ctx.db, "certificate", name, der)
            )
            assert position is not None
            proof = merkle.inclusion_proof(position, head.size, tree.subtree)
            proved = {"position": position, "proof": proof}
            forked: dict[str, Any] = {
                "username": name,
                "certificate": der,
                "transparency": {"head": head.to_wire(), **proved},
            }
            if name == TARGET:
                kem_at = tree.size - 1
                forked["kem_key"] = self.forged_kem
                forked["kem_transparency"] = {
                    "position": kem_at,
                    "proof": merkle.inclusion_proof(kem_at, head.size, tree.subtree),
                }
            return forked
        if self.mode == "logged":
            logged: dict[str, Any] = {
                "username": name,
                "certificate": der,
                "transparency": ctx.transparency.certificate_proof(name, der),
            }
            if name == TARGET:
                logged["kem_key"] = self.forged_kem
                logged["kem_transparency"] = ctx.transparency.kem_key_proof(TARGET, self.forged_kem)
            return logged
        # unlogged: the forged key with the real key's proof
        return {**honest, "certificate": der}

    def tree_head(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.active(ctx) and self.mode == "fork" and self.fork_head is not None:
            return {"head": self.fork_head.to_wire()}
        if self.active(ctx) and self.mode == "rollback":
            return {"head": keylog.heads(ctx.db)[0].to_wire()}
        result: dict[str, Any] = kt_tree_head.handle(ctx, params)
        return result

    def consistency(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if self.active(ctx) and self.mode == "fork" and self.fork is not None and self.fork_head:
            old, new = params["old_size"], params.get("new_size", self.fork_head.size)
            if new > self.fork.size:
                raise RequestError("unknown_tree_size", "no such tree", "new_size")
            proof = merkle.consistency_proof(old, new, self.fork.subtree) if 0 < old < new else []
            return {"head": self.fork_head.to_wire(), "proof": proof}
        if self.active(ctx) and self.mode == "rollback":
            raise RequestError("unknown_tree_size", "no such tree", "old_size")
        result: dict[str, Any] = kt_consistency.handle(ctx, params)
        return result

    def user_entries(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        honest: dict[str, Any] = kt_user_entries.handle(ctx, params)
        if self.active(ctx) and self.mode == "fork" and self.fork is not None and self.fork_head:
            fork, head = self.fork, self.fork_head
            entries = [
                {**e, "proof": merkle.inclusion_proof(e["position"], head.size, fork.subtree)}
                for e in honest["entries"]
                if e["position"] < head.size
            ]
            return {"head": head.to_wire(), "entries": entries}
        return honest


def _module(opcode: MessageType, handle: Any) -> types.ModuleType:
    module = types.ModuleType(f"kt_attack_{opcode.name.lower()}")
    module.OPCODE = opcode  # type: ignore[attr-defined]
    module.REQUIRES_AUTH = True  # type: ignore[attr-defined]
    module.handle = handle  # type: ignore[attr-defined]
    return module


def install(server: Server) -> None:
    attack = Attack(server, os.environ["UCHAT_TEST_KT_ATTACK"])
    for opcode, handle in (
        (MessageType.CERTIFICATE, attack.certificate),
        (MessageType.KT_TREE_HEAD, attack.tree_head),
        (MessageType.KT_CONSISTENCY, attack.consistency),
        (MessageType.KT_USER_ENTRIES, attack.user_entries),
    ):
        server.dispatcher.replace(_module(opcode, handle))
