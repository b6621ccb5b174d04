"""Configuration layering and the field rules shared by forms and server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import load_config
from common.errors import ConfigError, ValidationError
from common.validation import (
    validate_age,
    validate_email,
    validate_password,
    validate_registration,
    validate_room_name,
    validate_sex,
    validate_username,
)


def test_defaults_file_env_and_flags_layer_in_order(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server": {"port": 1111, "mac": "hmac-md5"}, "language": "en"}))
    config = load_config(path, env={"UCHAT_SERVER_PORT": "2222"}, overrides={"server.host": "::1"})
    assert config.server.port == 2222
    assert config.server.mac == "hmac-md5"
    assert config.server.host == "::1"
    assert config.language == "en"
    assert config.server.chunk_size == 256 * 1024


def test_repository_config_json_is_valid() -> None:
    config = load_config(env={})
    assert config.server.mac == "hmac-sha256"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"server": {"prot": 1}}, "unknown setting"),
        ({"server": {"port": "abc"}}, "not a valid"),
        ({"server": {"port": True}}, "not a valid"),
        ({"server": {"mac": "md5"}}, "server.mac"),
        ({"serverx": {}}, "unknown section"),
        ({"language": "fr"}, "language"),
        ({"server": {"scrypt_n": 1000}}, "power of two"),
    ],
)
def test_bad_configuration_is_refused_clearly(
    tmp_path: Path, document: dict[str, object], message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


CLUSTER = {
    "UCHAT_SERVER_DATABASE_URL": "host=db.lan dbname=uchat",
    "UCHAT_SERVER_REDIS_URL": "redis://bus.lan:6379/0",
    "UCHAT_SERVER_CA_PASSPHRASE_FILE": "/etc/uchat/ca-passphrase",
}


def empty_file(folder: Path) -> Path:
    path = folder / "config.json"
    path.write_text("{}")
    return path


def test_cluster_mode_settings_are_accepted_together(tmp_path: Path) -> None:
    config = load_config(empty_file(tmp_path), env=CLUSTER).server
    assert config.database_url == "host=db.lan dbname=uchat"
    assert config.redis_url.startswith("redis://")
    assert load_config(empty_file(tmp_path), env={}).server.database_url == ""
    stored = load_config(
        empty_file(tmp_path), env=CLUSTER | {"UCHAT_SERVER_ATTACHMENT_STORE": "database"}
    )
    assert stored.server.attachment_store == "database"


@pytest.mark.parametrize(
    ("drop", "add", "message"),
    [
        ("UCHAT_SERVER_REDIS_URL", {}, "needs server.redis_url"),
        ("UCHAT_SERVER_CA_PASSPHRASE_FILE", {}, "needs server.ca_passphrase_file"),
        ("", {"UCHAT_SERVER_CA_KEY_FILE": "/k.pem"}, "go together"),
        ("UCHAT_SERVER_DATABASE_URL", {}, "only used with server.database_url"),
        ("", {"UCHAT_SERVER_ATTACHMENT_STORE": "s3"}, 'must be "files" or "database"'),
        (
            "UCHAT_SERVER_DATABASE_URL",
            {"UCHAT_SERVER_ATTACHMENT_STORE": "database", "UCHAT_SERVER_REDIS_URL": ""},
            "needs server.database_url",
        ),
    ],
)
def test_incomplete_cluster_settings_are_refused(
    tmp_path: Path, drop: str, add: dict[str, str], message: str
) -> None:
    env = {key: value for key, value in CLUSTER.items() if key != drop} | add
    with pytest.raises(ConfigError, match=message):
        load_config(empty_file(tmp_path), env=env)


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json", env={})


@pytest.mark.parametrize("name", ["alice", "张三", "bob_2", "Ünal", "用户_01"])
def test_usernames_accepted(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize("name", ["", " ", "a", "a" * 33, "bob smith", "x;drop", "😀😀", "a-b"])
def test_usernames_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_username(name)
    assert info.value.field == "username" and info.value.code == "invalid_username"


@pytest.mark.parametrize("password", ["", "short1", "allletters", "12345678901", "x" * 129 + "1"])
def test_passwords_refused(password: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_password(password)
    assert info.value.code == "invalid_password"


@pytest.mark.parametrize("email", ["", "a@", "@b.c", "a@b", "a b@c.d", "a@-b.com"])
def test_emails_refused(email: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_email(email)
    assert info.value.code == "invalid_email"


def test_email_domain_is_lowercased() -> None:
    assert validate_email(" Alice@Example.COM ") == "Alice@example.com"


def test_sex_and_age() -> None:
    assert validate_sex("Female") == "female"
    assert validate_age("30") == 30
    for bad in ("x", "-1", 0, 151, True, 3.5, "²", "٣٠", "9" * 5000):
        with pytest.raises(ValidationError):
            validate_age(bad)
    with pytest.raises(ValidationError):
        validate_sex("robot")


def test_room_names() -> None:
    assert validate_room_name(" 学习小组 ") == "学习小组"
    for bad in ("", "x" * 41, "a\nb"):
        with pytest.raises(ValidationError):
            validate_room_name(bad)


def test_registration_reports_the_first_broken_field() -> None:
    form = {
        "username": "alice",
        "password": "correct horse 1",
        "confirm": "correct horse 2",
        "email": "a@b.cn",
        "sex": "female",
        "age": "20",
    }
    with pytest.raises(ValidationError) as info:
        validate_registration(form)
    assert info.value.field == "confirm"
    form["confirm"] = form["password"]
    assert validate_registration(form)["age"] == 20


def test_quota_settings_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"server": {"max_rooms_per_account": 0}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_rooms_per_account"):
        load_config(path, env={})


def test_the_client_allows_hmac_md5_only_when_told(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}", encoding="utf-8")
    assert load_config(path, env={}).client.allow_hmac_md5 is False
    config = load_config(path, env={"UCHAT_CLIENT_ALLOW_HMAC_MD5": "true"})
    assert config.client.allow_hmac_md5 is True
    path.write_text('{"client": {"allow_hmac_md5": "maybe"}}', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("requests_per_turn", 0, "requests_per_turn must be positive"),
        ("login_timeout", 0, "login_timeout must be positive"),
        ("prelogin_max_frame", 1024, "prelogin_max_frame must be between"),
        ("prelogin_max_frame", 2_000_000, "prelogin_max_frame must be between"),
        ("max_anonymous_per_address", 300, "max_anonymous_per_address must not exceed"),
        ("input_budget", 1024 * 1024, "input_budget must hold at least one largest frame"),
        ("search_page", 101, "search_page must be at most 100"),
        ("searches_per_minute", -1, "searches_per_minute must be positive"),
        ("joins_per_minute", 0, "joins_per_minute must be positive"),
    ],
)
def test_reactor_limits_are_validated(
    tmp_path: Path, setting: str, value: int, message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server": {setting: value}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
