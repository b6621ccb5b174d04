"""Configuration: defaults < config.json < UCHAT_* environment < command-line flags.

Everything ends up in frozen dataclasses so no part of the program can change a
setting behind another's back. Unknown keys and wrong types are errors, not
silently ignored, because a typo in a security setting must never go unnoticed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from common.errors import ConfigError
from common.servers import parse_servers

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.json"
MAC_CHOICES = ("hmac-sha256", "hmac-md5")
LANGUAGES = ("auto", "en", "zh_CN")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9999
    data_dir: str = "data/server"
    mac: str = "hmac-sha256"
    max_frame_size: int = 1_179_648
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 20_000
    worker_threads: int = 2
    worker_queue: int = 1_000
    write_buffer_limit: int = 8 * 1024 * 1024
    # Fair reactor and admission (server/net/admission.py, docs/security.md).
    output_pause_limit: int = 1024 * 1024
    requests_per_turn: int = 16
    time_per_turn: float = 0.002
    prelogin_max_frame: int = 16 * 1024
    login_timeout: float = 30.0
    max_connections_per_address: int = 256
    max_anonymous_per_address: int = 32
    input_budget: int = 64 * 1024 * 1024
    search_page: int = 20
    searches_per_minute: int = 30
    joins_per_minute: int = 20
    max_attachment_size: int = 100 * 1024 * 1024
    chunk_size: int = 256 * 1024
    username_min: int = 2
    username_max: int = 32
    password_min: int = 8
    login_max_failures: int = 5
    login_backoff_base: float = 1.0
    login_backoff_max: float = 300.0
    hashes_in_flight_per_address: int = 1
    hashes_waiting_per_address: int = 64
    register_per_address: int = 20
    register_window: float = 3600.0
    max_friend_requests_out: int = 200
    max_friend_requests_in: int = 1000
    friend_requests_page: int = 100
    max_rooms_per_account: int = 50
    max_room_members: int = 10_000
    max_uploads_per_account: int = 10_000
    max_upload_bytes_per_account: int = 2 * 1024 * 1024 * 1024
    max_undelivered_per_recipient: int = 100_000
    delivered_retention_days: float = 30.0
    abandoned_upload_hours: float = 24.0
    sweep_interval: float = 3600.0
    scrypt_n: int = 2**15
    offline_batch: int = 256
    log_level: str = "INFO"
    # Cluster mode (docs/deploy.md). Empty database_url: the embedded SQLite file.
    database_url: str = ""  # a libpq connection string or postgresql:// URL
    redis_url: str = ""  # the bus, e.g. redis://10.0.0.5:6379/0; required with database_url
    ca_passphrase_file: str = ""  # file holding the CA key's passphrase (mode 0600)
    ca_key_file: str = ""  # optional: the operator's CA key (PEM), else kept in PostgreSQL
    ca_cert_file: str = ""  # optional: its certificate (PEM), with ca_key_file
    node_id: str = ""  # empty: host-pid-random, new at every start
    # Attachment bytes: "files" in attachments_dir, or "database" (PostgreSQL rows, cluster
    # mode only). attachments_dir empty: <data_dir>/attachments; a cluster on "files"
    # mounts one shared folder there on every node.
    attachment_store: str = "files"
    attachments_dir: str = ""


@dataclass(frozen=True)
class ClientConfig:
    host: str = "127.0.0.1"
    port: int = 9999
    data_dir: str = ""  # empty: the platform's per-user data folder
    server_fingerprint: str = ""  # empty: trust on first use
    request_timeout: float = 10.0
    ping_interval: float = 30.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    font_size: int = 12
    font_color: str = "#1f2328"
    allow_hmac_md5: bool = False  # the original design's weaker record MAC, off unless chosen
    servers: str = ""  # more nodes of the same cluster, "host:port, host:port", tried in turn


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    client: ClientConfig = ClientConfig()
    language: str = "auto"


_T = TypeVar("_T")


def _coerce(section: str, name: str, kind: Any, value: Any) -> Any:
    """Convert a JSON or environment value to the field's type, or fail clearly."""
    where = f"{section}.{name}"
    try:
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, "int"):
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return int(value, 0)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int):
                return value
            raise ValueError
        if kind in (float, "float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind in (str, "str"):
            if not isinstance(value, str):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a valid {kind}") from None
    raise ConfigError(f"{where}: unsupported setting type {kind}")


def _build(cls: type[_T], section: str, values: Mapping[str, Any]) -> _T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {section}: {', '.join(unknown)}")
    converted = {k: _coerce(section, k, known[k].type, v) for k, v in values.items()}
    return cls(**converted)


def _from_env(env: Mapping[str, str], prefix: str, cls: type[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in fields(cls):
        key = f"{prefix}{f.name.upper()}"
        if key in env:
            out[f.name] = env[key]
    return out


_POSITIVE_LIMITS = (
    "login_max_failures",
    "hashes_in_flight_per_address",
    "hashes_waiting_per_address",
    "register_per_address",
    "register_window",
    "max_friend_requests_out",
    "max_friend_requests_in",
    "friend_requests_page",
    "max_rooms_per_account",
    "max_room_members",
    "max_uploads_per_account",
    "max_upload_bytes_per_account",
    "max_undelivered_per_recipient",
    "delivered_retention_days",
    "abandoned_upload_hours",
    "sweep_interval",
    "output_pause_limit",
    "requests_per_turn",
    "time_per_turn",
    "prelogin_max_frame",
    "login_timeout",
    "max_connections_per_address",
    "max_anonymous_per_address",
    "input_budget",
    "search_page",
    "searches_per_minute",
    "joins_per_minute",
)


def _validate_limits(s: ServerConfig) -> None:
    """Every quota and rate limit is a positive number (0 would lock everyone out)."""
    for name in _POSITIVE_LIMITS:
        if getattr(s, name) <= 0:
            raise ConfigError(f"server.{name} must be positive")
    if s.max_upload_bytes_per_account < s.max_attachment_size:
        raise ConfigError("server.max_upload_bytes_per_account must hold one largest attachment")
    _validate_admission(s)


def _validate_admission(s: ServerConfig) -> None:
    """Reactor limits that only make sense in a certain order."""
    if not 4096 <= s.prelogin_max_frame <= s.max_frame_size:
        raise ConfigError("server.prelogin_max_frame must be between 4096 and max_frame_size")
    if s.max_anonymous_per_address > s.max_connections_per_address:
        raise ConfigError(
            "server.max_anonymous_per_address must not exceed max_connections_per_address"
        )
    if s.input_budget < s.max_frame_size:
        raise ConfigError("server.input_budget must hold at least one largest frame")
    if s.search_page > 100:
        raise ConfigError("server.search_page must be at most 100")


def _validate_cluster(s: ServerConfig) -> None:
    """Cluster mode needs its bus and the CA passphrase; SQLite mode needs neither."""
    if s.attachment_store not in ("files", "database"):
        raise ConfigError('server.attachment_store must be "files" or "database"')
    if s.attachment_store == "database" and not s.database_url:
        raise ConfigError(
            'server.attachment_store = "database" needs server.database_url (PostgreSQL)'
        )
    if not s.database_url:
        if s.redis_url:
            raise ConfigError("server.redis_url is only used with server.database_url")
        return
    if not s.redis_url:
        raise ConfigError("server.database_url needs server.redis_url (the bus between nodes)")
    if not s.ca_passphrase_file:
        raise ConfigError("server.database_url needs server.ca_passphrase_file")
    if bool(s.ca_key_file) != bool(s.ca_cert_file):
        raise ConfigError("server.ca_key_file and server.ca_cert_file go together")


def _validate_servers(text: str) -> None:
    try:
        parse_servers(text)
    except ValueError as exc:
        raise ConfigError(f"client.servers: {exc}") from None


def _validate(config: Config) -> Config:
    s = config.server
    if s.mac not in MAC_CHOICES:
        raise ConfigError(f"server.mac must be one of {', '.join(MAC_CHOICES)}")
    if not 0 <= s.port <= 65535 or not 0 <= config.client.port <= 65535:
        raise ConfigError("ports must be between 0 and 65535")
    if s.chunk_size <= 0 or s.chunk_size + 4096 > s.max_frame_size:
        raise ConfigError("server.chunk_size must be positive and fit in max_frame_size")
    if s.scrypt_n < 2 or s.scrypt_n & (s.scrypt_n - 1) or s.scrypt_n > 2**18:
        raise ConfigError("server.scrypt_n must be a power of two no larger than 2**18")
    _validate_limits(s)
    _validate_cluster(s)
    _validate_servers(config.client.servers)
    if config.language not in LANGUAGES:
        raise ConfigError(f"language must be one of {', '.join(LANGUAGES)}")
    return config


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the configuration from every source, strongest last.

    `overrides` takes dotted keys (`"server.port"`) as the command-line flags give them.
    """
    env = os.environ if env is None else env
    file_path = Path(path) if path else Path(env.get("UCHAT_CONFIG", DEFAULT_CONFIG_PATH))
    raw: dict[str, Any] = {}
    if file_path.exists():
        try:
            raw = json.loads(file_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {file_path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file_path}: the top level must be an object")
    elif path:
        raise ConfigError(f"config file not found: {file_path}")

    unknown = sorted(set(raw) - {"server", "client", "language"})
    if unknown:
        raise ConfigError(f"unknown section(s) in config: {', '.join(unknown)}")
    server_values: dict[str, Any] = dict(raw.get("server", {}))
    client_values: dict[str, Any] = dict(raw.get("client", {}))
    language: Any = raw.get("language", "auto")

    server_values.update(_from_env(env, "UCHAT_SERVER_", ServerConfig))
    client_values.update(_from_env(env, "UCHAT_CLIENT_", ClientConfig))
    language = env.get("UCHAT_LANGUAGE", language)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        if section == "server":
            server_values[name] = value
        elif section == "client":
            client_values[name] = value
        elif dotted == "language":
            language = value
        else:
            raise ConfigError(f"unknown override {dotted}")

    if not isinstance(language, str):
        raise ConfigError("language must be a string")
    config = Config(
        server=_build(ServerConfig, "server", server_values),
        client=_build(ClientConfig, "client", client_values),
        language=language,
    )
    return _validate(config)


def replace_server(config: Config, **changes: Any) -> Config:
    """A copy of `config` with some server settings changed (tests, benchmarks)."""
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **changes))
