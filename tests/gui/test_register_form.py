"""The registration form: checks as the user types, and the server's refusals on the
field they concern."""

from __future__ import annotations

from collections.abc import Callable

from client import i18n
from client.core.client import ChatClient
from client.forms.register_form import RegisterForm
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name


def open_register(app: App) -> RegisterForm:
    app.form.register_link.invoke()  # type: ignore[union-attr]
    app.root.update()
    form = app.form
    assert isinstance(form, RegisterForm)
    return form


def fill(form: RegisterForm, **values: str) -> None:
    defaults = {
        "username": unique_name("reg"),
        "password": PASSWORD,
        "confirm": PASSWORD,
        "email": f"{unique_name('mail')}@example.org",
        "sex": "female",
        "age": "22",
    }
    defaults.update(values)
    for name, value in defaults.items():
        form.fields[name].set_value(value)


def test_bad_email_is_reported_under_the_email_field_as_the_user_leaves_it(app: App) -> None:
    form = open_register(app)
    form.fields["email"].set_value("not-an-email@")
    form.fields["email"].entry.event_generate("<FocusOut>")
    app.root.update()
    errors = form.errors()
    assert errors["email"] == i18n.t("error.invalid_email")
    assert errors["username"] == ""  # untouched fields stay quiet
    entry = form.fields["email"].entry
    entry.focus_force()
    entry.delete(0, "end")
    entry.insert(0, "fixed@example.org")
    app.root.update()
    entry.event_generate("<KeyRelease>", keysym="m")  # key events go to the focus
    app.root.update()
    assert form.errors()["email"] == ""
    assert app.client is None


def test_mismatched_confirmation_blocks_submission(app: App) -> None:
    form = open_register(app)
    fill(form, confirm="something-else-9")
    form.submit_button.invoke()
    app.root.update()
    assert form.errors()["confirm"] == i18n.t("error.password_mismatch")
    assert app.client is None


def test_username_taken_comes_back_under_the_username_field(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    taken = unique_name("taken")
    headless(taken, login=False)
    form = open_register(app)
    fill(form, username=taken)
    form.submit()
    assert form.submit_button.instate(["disabled"])
    pump_until(app.root, lambda: form.errors()["username"] != "", what="username_taken")
    assert form.errors()["username"] == i18n.t("error.username_taken")
    assert form.errors()["email"] == ""
    assert not form.submit_button.instate(["disabled"])
