"""`client.servers`: parsing the list and the order a reconnect walks it."""

from __future__ import annotations

import pytest

from client.core.servers import ServerList
from common.config import load_config
from common.errors import ConfigError
from common.servers import parse_servers


def test_hosts_names_and_ipv6_parse_in_order() -> None:
    assert parse_servers("") == []
    assert parse_servers(" 10.0.0.2:9999, node-c.lan:10000 ,[fd00::3]:9999,") == [
        ("10.0.0.2", 9999),
        ("node-c.lan", 10000),
        ("fd00::3", 9999),
    ]


@pytest.mark.parametrize(
    "text",
    ["node", "node:", ":9999", "node:0", "node:65536", "node:x", "fd00::3:9999", "[fd00::3]"],
)
def test_anything_else_is_refused_with_the_item_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not host:port|IPv6"):
        parse_servers(text)


def test_config_refuses_a_bad_list(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"client": {"servers": "a:1, b"}}')
    with pytest.raises(ConfigError, match=r"client\.servers"):
        load_config(path, env={})


def test_the_rotation_starts_with_the_configured_address_and_reports_rounds() -> None:
    servers = ServerList(("a", 1), [("b", 2), ("a", 1), ("c", 3)])  # a repeat counts once
    assert servers.addresses == (("a", 1), ("b", 2), ("c", 3))
    assert servers.current == ("a", 1)
    assert [servers.advance(), servers.advance(), servers.advance()] == [False, False, True]
    assert servers.current == ("a", 1)
    single = ServerList(("a", 1))
    assert single.advance() is True and single.current == ("a", 1)
