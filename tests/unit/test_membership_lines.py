"""The conversation lines of signed membership changes and alarms, in both languages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client import i18n
from client.forms.chat import membership_alarm_line, membership_line


@pytest.fixture(params=["en", "zh_CN"])
def language(request: pytest.FixtureRequest) -> Iterator[str]:
    i18n.use_language(request.param)
    yield request.param
    i18n.use_language("en")


def test_every_change_has_its_own_line(language: str) -> None:
    lines = {
        membership_line("create", "alice", "alice"),
        membership_line("join", "mallory", "mallory"),
        membership_line("join", "bob", "bob", approver="alice"),
        membership_line("leave", "carol", "carol"),
        membership_line("remove", "bob", "carol"),
        membership_line("grant_admin", "alice", "bob"),
        membership_line("transfer_owner", "alice", "bob"),
        membership_line("legacy", "alice", "alice, bob"),
    }
    assert len(lines) == 8  # all different
    assert "mallory" in membership_line("join", "mallory", "mallory")
    removed = membership_line("remove", "bob", "carol")
    assert "bob" in removed and "carol" in removed
    if language == "en":
        assert membership_line("join", "mallory", "mallory") == (
            "mallory joined with the group number"
        )
        assert membership_line("remove", "bob", "carol") == "bob removed carol"
        assert membership_line("grant_admin", "alice", "bob") == "alice made bob an admin"
        assert membership_line("transfer_owner", "alice", "bob") == "alice made bob the owner"
    else:
        assert membership_line("join", "mallory", "mallory") == "mallory 通过群号加入了群聊"
        assert membership_line("transfer_owner", "alice", "bob") == "alice 将群主转让给了 bob"
    # A kind this version does not know still gets a line, never a raw key.
    assert not membership_line("future_kind", "x", "y").startswith("membership.")


@pytest.mark.parametrize("reason", ["invalid_log", "gap", "rollback", "server_list_differs"])
def test_every_alarm_has_a_warning_line(language: str, reason: str) -> None:
    line = membership_alarm_line(reason, "event 3: bad signature", ["mallory"])
    assert not line.startswith("membership.")
    if reason == "server_list_differs":
        assert "mallory" in line
    if reason == "invalid_log":
        assert "event 3" in line
