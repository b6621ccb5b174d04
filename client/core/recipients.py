"""Who a message is sealed for, with each recipient's verified KEM key.

`room_recipients(room_id)` is the one place the member list of a room comes from: the
sender distributes its chain to exactly these members and seals the hash of this
list into each room message. Today it is the server's ROOM_CERTIFICATES list (every
certificate checked against the CA, its pin and the key log) narrowed to the names the
signed membership log proves (`RoomMembership.member_names`): a name the server lists
but no member signed in never receives the chain.

A KEM key is used only once `client.core.kem_keys.PeerKemObserver` accepted it: in the
key log and signed by the identity key pinned for that user (a key the server swapped
in is refused loudly there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from client.core.kem_keys import PeerKemKeys
from client.core.trust import CertificateBook
from common.crypto.certs import UserCertificate
from common.crypto.kem import SignedKemKey
from common.crypto.membership import member_list_hash
from common.errors import RequestError

log = logging.getLogger(__name__)
KEYLESS_REFRESH_S = 60.0


class Recipients:
    """Recipients and their KEM keys for sealing; see the module docstring."""

    def __init__(
        self,
        *,
        certificates: CertificateBook,
        kem_keys: PeerKemKeys,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._certificates = certificates
        self._kem_keys = kem_keys  # verified (log and pinned identity) as replies come in
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshed: dict[int, float] = {}
        self._member_names: Callable[[int, bool], frozenset[str]] | None = None

    def use_verified_members(self, member_names: Callable[[int, bool], frozenset[str]]) -> None:
        """Wire the signed membership log in (session set-up): `member_names(room, fetch)`."""
        self._member_names = member_names

    def room_recipients(self, room_id: int, *, refresh: bool = False) -> dict[str, UserCertificate]:
        """THE member list of a room a sender seals for (the seam described above)."""
        served = self._certificates.room_certificates(room_id, refresh=refresh)
        if self._member_names is None:
            return served
        names = self._member_names(room_id, refresh)
        if not names.issuperset(served) and not refresh:
            names = self._member_names(room_id, True)  # a join we have not replayed yet?
        # A name still not in the log is the server's alone: RoomMembership raised its
        # alarm when it compared the lists; it gets no chain and no sealed message.
        return {name: cert for name, cert in served.items() if name in names}

    def kem_key(self, certificate: UserCertificate) -> SignedKemKey | None:
        """The verified KEM key of a certified user; None if none was verified (yet)."""
        return self._kem_keys.get(certificate)

    def direct(self, username: str, *, refresh: bool = False) -> dict[str, SignedKemKey | None]:
        """The friend of a direct chat; an error if it cannot receive sealed chains."""
        try:
            certificate = self._certificates.certificate(username, refresh=refresh)
        except RequestError as exc:
            if exc.code != "forbidden":
                raise
            # The server shows certificates to friends only: say what that means.
            raise RequestError("not_friends", f"{username} is not your friend", "target") from None
        key = self.kem_key(certificate)
        if key is None and not refresh:  # maybe published since we fetched: ask once
            certificate = self._certificates.certificate(username, refresh=True)
            key = self.kem_key(certificate)
        if key is None:
            raise RequestError(
                "no_kem_key",
                f"{username} has no verified encryption key yet (they must sign in once "
                "with this version of Uchat)",
                "target",
            )
        return {certificate.username: key}

    def room(
        self, room_id: int, me: str, *, refresh: bool = False
    ) -> tuple[dict[str, SignedKemKey | None], bytes]:
        """Every other member with its KEM key (None: cannot read yet), and the list hash."""
        members = self.room_recipients(room_id, refresh=refresh)
        recipients = {
            name: self.kem_key(certificate) for name, certificate in members.items() if name != me
        }
        if None in recipients.values() and self._refresh_due(room_id):
            # someone could not receive the chain: their key may have been published since
            members = self.room_recipients(room_id, refresh=True)
            recipients = {name: self.kem_key(cert) for name, cert in members.items() if name != me}
        return recipients, member_list_hash(str(room_id), members)

    def _refresh_due(self, room_id: int) -> bool:
        """At most one refetch of a room's keys a minute for members without one."""
        now = self._clock()
        with self._lock:
            if now - self._refreshed.get(room_id, -KEYLESS_REFRESH_S) < KEYLESS_REFRESH_S:
                return False
            self._refreshed[room_id] = now
            return True
