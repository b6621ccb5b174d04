"""The login form: inline errors for empty fields, bad credentials, an unreachable or
impostor server, and the way back after being logged in elsewhere."""

from __future__ import annotations

from collections.abc import Callable

from client import i18n
from client.core.client import ChatClient
from client.forms.contacts_form import ContactsForm
from client.forms.login_form import LoginForm
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name


def login_form(app: App) -> LoginForm:
    form = app.form
    assert isinstance(form, LoginForm)
    return form


def test_empty_fields_are_reported_inline_without_contacting_the_server(app: App) -> None:
    form = login_form(app)
    form.login_button.invoke()
    app.root.update()
    errors = form.errors()
    assert errors["username"] == i18n.t("error.required")
    assert errors["password"] == i18n.t("error.required")
    assert errors["server"] == ""
    assert app.client is None  # nothing was sent anywhere
    assert str(form.login_button.cget("text")) == i18n.t("login.submit")


def test_bad_server_address_is_reported_under_the_server_field(app: App) -> None:
    form = login_form(app)
    form.username.set_value("someone")
    form.password.set_value("whatever1")
    form.server.set_value("host:notaport")
    form.submit()
    assert form.errors()["server"] == i18n.t("error.server_port")
    assert app.client is None


def test_wrong_password_shows_login_failed(app: App, headless: Callable[..., ChatClient]) -> None:
    name = unique_name("pw")
    headless(name, login=False)
    form = login_form(app)
    form.username.set_value(name)
    form.password.set_value("not-the-password-1")
    form.password.entry.focus_force()
    app.root.update()
    form.password.entry.event_generate("<Return>")  # key events go to the focus
    assert form.login_button.instate(["disabled"])  # busy while the request runs
    pump_until(app.root, lambda: form.errors()["general"] != "", what="the login error")
    assert form.errors()["general"] == i18n.t("error.login_failed")
    assert not form.login_button.instate(["disabled"])


def test_unreachable_server_is_explained(app: App) -> None:
    form = login_form(app)
    form.username.set_value("someone")
    form.password.set_value("whatever1")
    form.server.set_value("127.0.0.1:1")
    form.submit()
    pump_until(app.root, lambda: form.errors()["server"] != "", what="the connection error")
    assert form.errors()["server"] == i18n.t("error.connection", server="127.0.0.1:1")


def test_server_pin_mismatch_is_explained(make_app: Callable[..., App]) -> None:
    app = make_app(server_fingerprint="ab" * 32)
    form = login_form(app)
    form.username.set_value("someone")
    form.password.set_value("whatever1")
    form.submit()
    pump_until(app.root, lambda: form.errors()["server"] != "", what="the pin error")
    assert form.errors()["server"] == i18n.t("error.pin_mismatch", server=str(app.server_address))


def test_logging_in_elsewhere_returns_to_the_login_form_with_the_reason(
    app: App, headless: Callable[..., ChatClient], tmp_path
) -> None:
    name = unique_name("kick")
    headless(name, login=False)
    form = login_form(app)
    form.username.set_value(name)
    form.password.set_value(PASSWORD)
    form.submit()
    pump_until(app.root, lambda: isinstance(app.form, ContactsForm), what="the contact list")
    port = app.server_address.port
    with ChatClient("127.0.0.1", port, tmp_path / "elsewhere") as other:
        other.login(name, PASSWORD)
        pump_until(app.root, lambda: isinstance(app.form, LoginForm), what="the login form")
    notice = str(login_form(app).notice.cget("text"))
    assert notice.startswith(i18n.t("login.kicked", address="")[:20])
    assert "127.0.0.1:" in notice
    assert app.client is None
    assert login_form(app).username.value == name  # filled in: only the password to type
