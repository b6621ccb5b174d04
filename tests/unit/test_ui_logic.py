"""The GUI's rules without a display: ordering, badges, times, input parsing, bounds,
error wording and the translation catalogs."""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from client import i18n
from client.components.formatting import (
    address_text,
    badge_text,
    elide,
    format_list_time,
    format_message_time,
    format_size,
    preview_text,
    status_mark,
)
from client.core.models import ChatMessage, Contact
from client.forms.chat import (
    MAX_FONT_SIZE,
    MIN_FONT_SIZE,
    ChatTranscript,
    clamp_font_size,
    normalise_color,
    search_in_chat,
    should_send,
    target_of,
)
from client.forms.contacts import (
    Action,
    InputError,
    parse_action_input,
    parse_room_number,
    search_row_state,
    sort_contacts,
    total_unread,
)
from client.forms.errors import describe_error
from client.forms.login import (
    AddressError,
    ServerAddress,
    missing_login_fields,
    parse_server_address,
)
from client.forms.register import Registration, check_registration, field_errors
from client.theme import avatar_color, initial, pick_font_family
from common.errors import (
    ConnectionLost,
    HandshakeError,
    RequestError,
    RequestTimeout,
)
from common.validation import SEXES

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 5, 17, 15, 30)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    previous = i18n.current_language()
    i18n.use_language("en")
    yield
    i18n.use_language(previous)


def message(mid: str, time: int = 0, **extra: object) -> ChatMessage:
    fields: dict[str, object] = {"chat_kind": "user", "chat_id": "bob", "sender": "bob"}
    fields.update(extra)
    return ChatMessage(mid, time=time, kind="text", text=mid, **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- contact list


def test_contacts_sort_by_last_activity_only_then_name() -> None:
    contacts = [
        Contact("user", "dave", "dave", online=False, last_message_time=900),
        Contact("user", "bob", "bob", online=True, last_message_time=100),
        Contact("room", "7", "Club", last_message_time=500),
        Contact("user", "amy", "amy", online=True, last_message_time=100),
        Contact("user", "eve", "eve", online=True, last_message_time=300),
    ]
    assert [c.id for c in sort_contacts(contacts)] == ["dave", "7", "eve", "amy", "bob"]


@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_previews_translate_the_kind_name_the_group_sender_and_mark_drafts(
    language: str,
) -> None:
    i18n.use_language(language)
    try:
        friend = Contact("user", "bob", "bob", last_message="cat.png", last_kind="image")
        assert preview_text(friend, "me") == ("", f"{i18n.t('contacts.preview_image')} cat.png")
        room = Contact("room", "7", "Club", last_message="hi all", last_sender="bob")
        assert preview_text(room, "me")[1] == i18n.t(
            "contacts.preview_sender", name="bob", text="hi all"
        )
        mine = dataclasses.replace(room, last_sender="me", last_kind="file", last_message="a.pdf")
        assert preview_text(mine, "me")[1] == i18n.t(
            "contacts.preview_sender",
            name=i18n.t("contacts.you"),
            text=f"{i18n.t('contacts.preview_file')} a.pdf",
        )
        drafted = dataclasses.replace(friend, draft=True)
        assert preview_text(drafted, "me")[0] == i18n.t("contacts.draft_marker")
        assert preview_text(Contact("user", "x", "x"), "me") == ("", "")
        if language == "zh_CN":
            assert "[文件]" in preview_text(mine, "me")[1]
    finally:
        i18n.use_language("en")


def test_badge_text_hides_zero_and_caps_large_counts() -> None:
    assert [badge_text(n) for n in (-1, 0, 1, 42, 99, 100, 5000)] == [
        "",
        "",
        "1",
        "42",
        "99",
        "99+",
        "99+",
    ]
    assert (
        total_unread([Contact("user", "a", "a", unread=3), Contact("room", "1", "r", unread=2)])
        == 5
    )


def test_address_line_shows_ip_port_or_group_size() -> None:
    assert address_text(Contact("user", "a", "a", ip="10.0.0.5", port=5000)) == "10.0.0.5:5000"
    assert address_text(Contact("user", "a", "a", ip="::1", port=5000)) == "[::1]:5000"
    assert address_text(Contact("user", "a", "a")) == i18n.t("contacts.never_seen")
    room = Contact("room", "12", "Club", members=("a", "b", "c"))
    assert address_text(room) == "Group #12 · 3 members"


@pytest.mark.parametrize(
    ("text", "number"), [("12", 12), ("  #12 ", 12), ("# 7", 7), ("9223372036854775807", 2**63 - 1)]
)
def test_room_numbers_are_parsed_leniently(text: str, number: int) -> None:
    assert parse_room_number(text) == number


@pytest.mark.parametrize(
    "text", ["", "  ", "abc", "0", "-3", "1.5", "\uff11\uff12", "9223372036854775808"]
)
def test_bad_room_numbers_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_room_number(text)
    assert str(caught.value) in (i18n.t("error.required"), i18n.t("error.room_number"))


def test_action_inputs_use_the_shared_validation_rules() -> None:
    assert parse_action_input(Action.ADD_FRIEND, "  bob ") == "bob"
    assert parse_action_input(Action.JOIN_GROUP, "#3") == 3
    assert parse_action_input(Action.CREATE_GROUP, " 爬山群 ") == "爬山群"
    with pytest.raises(InputError, match="letters"):
        parse_action_input(Action.DELETE_FRIEND, "bad name!")
    with pytest.raises(InputError):
        parse_action_input(Action.CREATE_GROUP, "x" * 41)


def test_search_rows_offer_add_only_to_strangers() -> None:
    assert search_row_state({"username": "me"}, "me") == "self"
    assert search_row_state({"username": "a", "is_friend": True}, "me") == "friend"
    assert search_row_state({"username": "a", "pending": True}, "me") == "pending"
    assert search_row_state({"username": "a", "is_friend": False, "pending": False}, "me") == "add"


# ---------------------------------------------------------------- times and sizes


def test_message_times_get_shorter_the_closer_they_are() -> None:
    assert format_message_time(ms(datetime(2024, 5, 17, 9, 5)), NOW) == "09:05"
    assert format_message_time(ms(datetime(2024, 5, 16, 23, 59)), NOW) == "Yesterday 23:59"
    assert format_message_time(ms(datetime(2024, 3, 7, 8, 0)), NOW) == "03-07 08:00"
    assert format_message_time(ms(datetime(2023, 12, 31, 8, 0)), NOW) == "2023-12-31 08:00"


def test_list_times_are_compact_and_empty_without_messages() -> None:
    assert format_list_time(0, NOW) == ""
    assert format_list_time(ms(datetime(2024, 5, 17, 0, 1)), NOW) == "00:01"
    assert format_list_time(ms(datetime(2024, 5, 16, 12, 0)), NOW) == "Yesterday"
    assert format_list_time(ms(datetime(2024, 1, 2, 12, 0)), NOW) == "01-02"
    assert format_list_time(ms(datetime(2022, 1, 2, 12, 0)), NOW) == "2022-01-02"
    i18n.use_language("zh_CN")
    assert format_list_time(ms(datetime(2024, 5, 16, 12, 0)), NOW) == "昨天"


def test_sizes_and_status_marks() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1536) == "1.5 KB"
    assert format_size(5 * 1024 * 1024) == "5.0 MB"
    assert format_size(3 * 1024**4) == "3072.0 GB"
    assert [status_mark(s) for s in ("sending", "sent", "delivered", "failed", "received")] == [
        "\u2026",
        "\u2713",
        "\u2713\u2713",
        "\u2717",
        "",
    ]


# ---------------------------------------------------------------- chat input


@pytest.mark.parametrize(
    ("value", "size"),
    [(14, 14), ("20", 20), (" 9 ", 9), ("2", MIN_FONT_SIZE), ("500", MAX_FONT_SIZE), ("x", 12)],
)
def test_font_sizes_stay_within_bounds(value: object, size: int) -> None:
    assert clamp_font_size(value) == size
    assert 6 <= MIN_FONT_SIZE <= MAX_FONT_SIZE <= 72  # inside what the protocol accepts


def test_colours_from_the_chooser_are_normalised_or_dropped() -> None:
    assert normalise_color("#AbC123") == "#abc123"
    assert normalise_color(None) is None
    assert normalise_color("red") is None
    assert normalise_color("#abc") is None


def test_enter_sends_and_shift_enter_breaks_the_line() -> None:
    assert should_send("Return", 0)
    assert should_send("KP_Enter", 0x10)  # NumLock on
    assert not should_send("Return", 0x1)  # Shift
    assert not should_send("a", 0)


def test_targets_and_history_search_stay_within_the_chat() -> None:
    bob = Contact("user", "bob", "bob")
    room = Contact("room", "5", "Club")
    assert target_of(bob) == "bob"
    assert target_of(room) == 5
    hits = [
        message("a", 1),
        message("b", 3),
        message("c", 2, chat_kind="room", chat_id="5"),
        message("d", 2),
    ]
    assert [m.message_id for m in search_in_chat(hits, bob)] == ["b", "d", "a"]
    assert [m.message_id for m in search_in_chat(hits, room)] == ["c"]


def test_transcript_keeps_each_message_once_and_pages_backwards() -> None:
    transcript = ChatTranscript(page_size=3)
    assert transcript.prepend([message("m3"), message("m4"), message("m5")]) != []
    full_page_has_more = transcript.has_more  # a full page: there may be more
    assert full_page_has_more
    assert transcript.add(message("m6")) is not None
    assert transcript.add(message("m6")) is None
    fresh = transcript.prepend([message("m1"), message("m2"), message("m3")])
    assert [m.message_id for m in fresh] == ["m1", "m2"]
    assert [m.message_id for m in transcript.messages] == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert transcript.prepend([message("m0")])
    short_page_has_more = transcript.has_more  # a short page: the beginning
    assert not short_page_has_more
    oldest = transcript.oldest()
    assert oldest is not None and oldest.message_id == "m0"
    updated = transcript.set_status("m4", "delivered")
    assert updated is not None and updated.status == "delivered"
    assert transcript.get("m4") == updated
    assert transcript.set_status("nope", "sent") is None


def test_a_status_that_overtakes_its_message_is_applied_on_arrival() -> None:
    transcript = ChatTranscript()
    assert transcript.set_status("fast", "delivered") is None
    stored = transcript.add(message("fast", outgoing=True, status="sending"))
    assert stored is not None and stored.status == "delivered"
    for number in range(200):  # other chats' statuses pass by; only a few are kept
        transcript.set_status(f"other{number}", "sent")
    late = transcript.add(message("other0", outgoing=True, status="sending"))
    assert late is not None and late.status == "sending"


# ---------------------------------------------------------------- login and registration


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("example.org", ServerAddress("example.org", 9999)),
        (" 10.0.0.2:7000 ", ServerAddress("10.0.0.2", 7000)),
        ("[::1]:8000", ServerAddress("::1", 8000)),
        ("[fe80::1]", ServerAddress("fe80::1", 9999)),
        ("::1", ServerAddress("::1", 9999)),
    ],
)
def test_server_addresses(text: str, address: ServerAddress) -> None:
    assert parse_server_address(text, 9999) == address


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "host:x", "[::1", "a b:1"])
def test_bad_server_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_server_address(text, 9999)


def test_server_address_round_trips_through_its_text() -> None:
    assert str(ServerAddress("::1", 8000)) == "[::1]:8000"
    assert parse_server_address(str(ServerAddress("::1", 8000)), 1) == ServerAddress("::1", 8000)


def test_login_needs_both_fields() -> None:
    assert missing_login_fields("", "") == {
        "username": i18n.t("error.required"),
        "password": i18n.t("error.required"),
    }
    assert missing_login_fields("  ", "x") == {"username": i18n.t("error.required")}
    assert missing_login_fields("bob", "x") == {}


GOOD = {
    "username": "小明_01",
    "password": "secret-123",
    "confirm": "secret-123",
    "email": "ming@Example.ORG",
    "sex": "male",
    "age": "21",
}


def test_registration_checks_only_touched_fields() -> None:
    values = {**GOOD, "email": "nope", "username": ""}
    assert field_errors(values, []) == {}
    assert field_errors(values, ["email"]) == {"email": i18n.t("error.invalid_email")}
    assert field_errors(values, ["username"]) == {"username": i18n.t("error.required")}
    assert field_errors({**GOOD, "confirm": "other-123"}, ["confirm"]) == {
        "confirm": i18n.t("error.password_mismatch")
    }
    same = {**GOOD, "password": "Ming_0123", "confirm": "Ming_0123", "username": "ming_0123"}
    assert field_errors(same, ["password"]) == {"password": i18n.t("error.password_is_username")}
    assert field_errors({**GOOD, "age": "200"}, ["age"]) == {"age": i18n.t("error.invalid_age")}


def test_a_complete_registration_is_normalised() -> None:
    assert check_registration(GOOD) == Registration(
        "小明_01", "secret-123", "ming@example.org", "male", 21
    )
    problem = check_registration({**GOOD, "sex": ""})
    assert not isinstance(problem, Registration)
    assert problem.field == "sex" and problem.message == i18n.t("error.required")


# ---------------------------------------------------------------- error wording


def test_server_refusals_land_on_their_field() -> None:
    taken = describe_error(RequestError("username_taken", "taken"))
    assert (taken.field, taken.message) == ("username", i18n.t("error.username_taken"))
    named = describe_error(RequestError("email_taken", "taken", "email"))
    assert named.field == "email"
    failed = describe_error(RequestError("login_failed", "no"))
    assert (failed.field, failed.message) == (None, i18n.t("error.login_failed"))
    unknown = describe_error(RequestError("brand_new_code", "The server explains."))
    assert unknown.message == "The server explains."


def test_connection_problems_are_explained_on_the_server_field() -> None:
    lost = describe_error(ConnectionLost("refused"), "h:1")
    assert (lost.field, lost.message) == ("server", i18n.t("error.connection", server="h:1"))
    assert describe_error(RequestTimeout("slow")).message == i18n.t("error.timeout")
    pin = HandshakeError(
        "the server's certificate does not match the pinned fingerprint (got ab); "
        "someone may be intercepting the connection"
    )
    assert describe_error(pin, "h:1").message == i18n.t("error.pin_mismatch", server="h:1")
    other = describe_error(HandshakeError("bad signature"))
    assert "bad signature" in other.message
    assert describe_error(ZeroDivisionError()).message == i18n.t("error.unexpected")


# ---------------------------------------------------------------- theme


def test_font_family_prefers_cjk_fonts_that_are_installed() -> None:
    installed = ["DejaVu Sans", "wenquanyi zen hei", "Noto Sans"]
    assert pick_font_family(installed) == "wenquanyi zen hei"
    assert pick_font_family(["Noto Sans CJK SC", *installed]) == "Noto Sans CJK SC"
    assert pick_font_family(["Comic Sans"]) == ""


def test_avatars_are_stable_per_name() -> None:
    assert avatar_color("bob") == avatar_color("bob")
    assert re.fullmatch(r"#[0-9a-f]{6}", avatar_color("小明"))
    assert len({avatar_color(f"user{i}") for i in range(40)}) > 3
    assert (initial("bob"), initial(" 小明"), initial("")) == ("B", "小", "?")


# ---------------------------------------------------------------- translations


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogs_have_the_same_keys_and_no_empty_values() -> None:
    assert set(i18n.EN) == set(i18n.ZH_CN)
    for catalog in (i18n.EN, i18n.ZH_CN):
        assert all(value.strip() for value in catalog.values())


def test_translations_use_the_same_placeholders() -> None:
    for key, english in i18n.EN.items():
        assert placeholders(english) == placeholders(i18n.ZH_CN[key]), key


def source_keys() -> set[str]:
    """Keys the client passes to i18n.t / i18n.has as string literals."""
    found: set[str] = set()
    literal = re.compile(r"i18n\.(?:t|has)\(\s*\"([a-z_.]+)\"")
    for path in (REPO / "client").rglob("*.py"):
        if "core" not in path.parts:
            found.update(literal.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_key_the_client_uses_is_translated() -> None:
    keys = source_keys()
    assert len(keys) > 50  # the scan found the calls
    keys |= {
        f"action.{a.value}.{part}"
        for a in Action
        for part in ("button", "prompt", "confirm", "done")
    }
    keys |= {f"sex.{sex}" for sex in SEXES}
    keys |= {
        f"contacts.{k}"
        for k in (
            "state_friend",
            "state_pending",
            "state_self",
            "accept",
            "reject",
            "later",
            "offline",
        )
    }
    keys |= {f"connection.{s}" for s in ("connecting", "connected", "reconnecting", "disconnected")}
    keys |= {"chat.image_label", "chat.file_label", "chat.save"}
    assert sorted(keys - set(i18n.EN)) == []


def test_every_protocol_error_code_has_a_message() -> None:
    protocol = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = protocol.split("## 5. Error codes", 1)[1]
    codes = set(re.findall(r"`([a-z_]+)`", section))
    assert "username_taken" in codes
    assert sorted(c for c in codes if f"error.{c}" not in i18n.EN) == []


def test_language_comes_from_the_setting_then_the_locale() -> None:
    assert i18n.detect_language("zh_CN", {"LANG": "en_US.UTF-8"}) == "zh_CN"
    assert i18n.detect_language("en", {"LANG": "zh_CN.UTF-8"}) == "en"
    assert i18n.detect_language("auto", {"LANG": "zh_TW.UTF-8"}) == "zh_CN"
    assert i18n.detect_language("auto", {"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN"}) == "en"
    assert i18n.detect_language("auto", {"LC_ALL": "", "LANG": "zh_CN.UTF-8"}) == "zh_CN"
    assert i18n.detect_language("auto", {}) == "en"


def test_translator_fills_placeholders_and_falls_back() -> None:
    i18n.use_language("zh_CN")
    assert i18n.t("contacts.request_from", name="bob") == "bob 请求添加您为好友"
    assert i18n.t("no.such.key") == "no.such.key"
    assert not i18n.has("no.such.key")
    with pytest.raises(ValueError, match="unsupported"):
        i18n.use_language("fr")


def test_the_register_form_names_an_invisible_character_inline() -> None:
    from client import i18n
    from client.forms.register import field_errors

    for language in i18n.LANGUAGES:
        i18n.use_language(language)
        errors = field_errors({"username": "alice\u3164"}, ["username"])
        assert errors["username"] == i18n.t("error.username_invisible")
    i18n.use_language("en")


def test_long_text_is_elided_to_fit_and_short_text_is_kept() -> None:
    def measure(text: str) -> int:
        return 10 * len(text)  # every character 10 px wide

    assert elide("Online · bob@example.org", 400, measure) == "Online · bob@example.org"
    assert elide("Online · alice@example.org", 120, measure) == "Online · al\u2026"
    assert elide("Online  · x", 50, measure) == "Onli\u2026"
    assert elide("在线 · 很长的地址@example.org", 60, measure) == "在线 ·\u2026"
    assert elide("abc", 5, measure) == "\u2026"
