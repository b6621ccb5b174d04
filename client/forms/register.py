"""Registration form logic without a window: per-field checks as the user types.

The rules are `common.validation`'s, the same the server applies, so the form can only
be wrong where the server would be (a name or email already taken).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from client.forms.errors import Problem, validation_message
from common.errors import ValidationError
from common.validation import (
    SEXES,
    validate_age,
    validate_email,
    validate_password,
    validate_registration,
    validate_sex,
    validate_username,
)

FIELDS = ("username", "password", "confirm", "email", "sex", "age")

_FIELD_RULES: dict[str, Callable[[Any], object]] = {
    "username": validate_username,
    "password": validate_password,
    "email": validate_email,
    "sex": validate_sex,
    "age": validate_age,
}


@dataclass(frozen=True)
class Registration:
    """The normalised fields `ChatClient.register` takes."""

    username: str
    password: str
    email: str
    sex: str
    age: int


def _check_field(field: str, values: Mapping[str, str]) -> None:
    rule = _FIELD_RULES.get(field)
    if rule is not None:
        rule(values.get(field, ""))
    if field == "confirm" and values.get("confirm", "") != values.get("password", ""):
        raise ValidationError("confirm", "invalid_password", "The two passwords do not match.")
    if field == "password":
        name = values.get("username", "").strip()
        if name and values.get("password", "").casefold() == name.casefold():
            raise ValidationError(
                "password", "invalid_password", "Password must differ from the username."
            )


def field_errors(values: Mapping[str, str], touched: Iterable[str]) -> dict[str, str]:
    """Inline messages for the fields the user has already visited."""
    errors: dict[str, str] = {}
    for field in FIELDS:
        if field not in touched:
            continue
        try:
            _check_field(field, values)
        except ValidationError as exc:
            errors[field] = validation_message(exc, values)
    return errors


def check_registration(values: Mapping[str, str]) -> Registration | Problem:
    """The whole form through `validate_registration`; the first broken field on failure."""
    for field in FIELDS:  # the per-field pass names the field a user sees first
        problems = field_errors(values, [field])
        if problems:
            return Problem(problems[field], field)
    try:
        clean = validate_registration(dict(values))
    except ValidationError as exc:
        return Problem(validation_message(exc, values), exc.field)
    return Registration(
        clean["username"], clean["password"], clean["email"], clean["sex"], clean["age"]
    )


def sex_choices() -> tuple[str, ...]:
    return SEXES
