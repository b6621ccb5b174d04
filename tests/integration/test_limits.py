"""Messages the server could not take are refused on the client, clearly and at once.

A text too long for one envelope, or a message too big for one record, must never be
stored in the outbox: it would be resent (and refused) after every reconnect.
"""

from __future__ import annotations

import pytest

from common.errors import RequestError
from tests.integration.conftest import RunningServer
from tests.integration.helpers import Accounts, befriended_pair, make_accounts, serve_one_module

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def test_a_text_too_long_for_an_envelope_is_refused_and_not_kept(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = befriended_pair(shared_server, accounts)
    with pytest.raises(RequestError) as refused:
        alice.client.send_text(bob.name, "长" * 20_001)  # 60,003 bytes of UTF-8
    assert refused.value.code == "message_too_large"
    assert refused.value.field == "text"
    assert alice.client.history(bob.name) == []

    fits = "长" * 20_000  # 60,000 bytes: the largest text that still fits
    sent = alice.client.send_text(bob.name, fits)
    received = bob.events.wait_one("message")
    assert received.data["message"].text == fits
    assert received.data["message"].message_id == sent.message_id
