"""`client.servers`: more addresses of one Uchat cluster, written "host:port, host:port"."""

from __future__ import annotations

Address = tuple[str, int]


def parse_servers(text: str) -> list[Address]:
    """'host:port, [v6::addr]:port, ...' -> [(host, port)]; ValueError saying what is wrong."""
    found: list[Address] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"{item!r}: write an IPv6 address as [addr]:port")
            port_text = rest[1:]
        else:
            host, colon, port_text = item.rpartition(":")
            if not colon or ":" in host:
                raise ValueError(f"{item!r} is not host:port")
        if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"{item!r} is not host:port with a port from 1 to 65535")
        found.append((host, int(port_text)))
    return found
