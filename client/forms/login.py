"""Login form logic without a window: field checks and the server address."""

from __future__ import annotations

from dataclasses import dataclass

from client import i18n

MAX_PORT = 65535


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class AddressError(ValueError):
    """The server field is not host:port; the message is ready to show."""


def parse_server_address(text: str, default_port: int) -> ServerAddress:
    """`host`, `host:port`, `[v6]:port` or `v6` -> ServerAddress; AddressError otherwise."""
    value = text.strip()
    if not value:
        raise AddressError(i18n.t("error.required"))
    host, port_text, has_port = value, "", False
    if value.startswith("["):
        closing = value.find("]")
        if closing < 0:
            raise AddressError(i18n.t("error.server_address"))
        host, rest = value[1:closing], value[closing + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise AddressError(i18n.t("error.server_address"))
            port_text, has_port = rest[1:], True
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        has_port = True
    host = host.strip()
    if not host or any(ch.isspace() for ch in host):
        raise AddressError(i18n.t("error.server_address"))
    if not has_port:
        return ServerAddress(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) <= MAX_PORT:
        raise AddressError(i18n.t("error.server_port"))
    return ServerAddress(host, int(port_text))


def missing_login_fields(username: str, password: str) -> dict[str, str]:
    """Empty required fields -> inline message; checked before anything is sent."""
    problems: dict[str, str] = {}
    if not username.strip():
        problems["username"] = i18n.t("error.required")
    if not password:
        problems["password"] = i18n.t("error.required")
    return problems
