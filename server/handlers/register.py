"""REGISTER: validate the form and the CSR, hash the password off the reactor, certify.

Uniqueness is checked twice: up front, so a taken name fails fast without a KDF run,
and again after hashing, because another registration may have taken the name while
the password was being hashed on the worker pool. A name is taken when an account has
the same canonical form (NFKC + casefold) and refused as `username_confusable` when an
account's name has the same TR39 skeleton ('alice' with a Cyrillic 'a' beside 'alice').

Each address may register `register_per_address` accounts per `register_window`
seconds (`too_many_registrations`), and its hashes share the per-address queue with
its logins (`server.hash_queue`), so a registration flood delays only its sender.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any

from common.crypto.certs import CsrInfo, issue_certificate, verify_csr
from common.crypto.passwords import ScryptParams, hash_password
from common.errors import CertificateError, RequestError, ValidationError
from common.protocol.opcodes import MessageType
from common.validation import validate_email, validate_registration, validate_username
from server.handlers._params import get_bytes
from server.storage import rate_windows, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.REGISTER
REQUIRES_AUTH = False
CSR_MAX = 4096  # an Ed25519 CSR with two extensions is a few hundred bytes

log = logging.getLogger(__name__)


def handle(ctx: Context, params: dict[str, Any]) -> None:
    window = _Window(ctx)
    window.refuse_if_full(rate_windows.wait_ms(ctx.db, *window.args))  # before costly checks
    form = _validated_form(ctx, params)
    csr = get_bytes(params, "csr", max_len=CSR_MAX)
    _check_available(ctx, form)
    info = _certified_identity(csr, form)
    password, cost = form["password"], ScryptParams(n=ctx.config.scrypt_n)
    window.refuse_if_full(rate_windows.take(ctx.db, *window.args))
    try:
        ctx.services.hashes.submit(
            ctx, lambda: hash_password(password, cost), lambda h: _create(ctx, form, info, h)
        )
    except RequestError:
        rate_windows.give_back(ctx.db, window.key)
        raise


class _Window:
    """This address's registration window: `register_per_address` per `register_window`."""

    def __init__(self, ctx: Context) -> None:
        self.key = f"register:{ctx.peer[0]}"
        window_ms = int(ctx.config.register_window * 1000)
        self.args = (self.key, ctx.now(), ctx.config.register_per_address, window_ms)

    @staticmethod
    def refuse_if_full(wait_ms: int) -> None:
        if wait_ms:
            minutes = max(1, math.ceil(wait_ms / 60_000))
            raise RequestError(
                "too_many_registrations",
                f"too many accounts registered from your address; try again in {minutes} minutes",
            )


def _validated_form(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_registration(
            {key: params.get(key) for key in ("username", "password", "email", "sex", "age")},
            username_min=ctx.config.username_min,
            username_max=ctx.config.username_max,
            password_min=ctx.config.password_min,
        )
    except ValidationError as exc:
        raise RequestError(exc.code, exc.message, exc.field) from None


def _check_available(ctx: Context, form: dict[str, Any]) -> None:
    if users.username_taken(ctx.db, form["username"]):
        raise RequestError("username_taken", "this username is already taken", "username")
    if users.look_alike(ctx.db, form["username"]) is not None:
        raise RequestError(
            "username_confusable", "this username looks like an existing one", "username"
        )
    if users.email_taken(ctx.db, form["email"]):
        raise RequestError("email_taken", "this email is already registered", "email")


def _certified_identity(csr: bytes, form: dict[str, Any]) -> CsrInfo:
    """The verified CSR, rewritten with the form's normalised username and email."""
    try:
        info = verify_csr(csr)
    except CertificateError as exc:
        raise RequestError(
            "invalid_csr", f"the certificate request is invalid: {exc}", "csr"
        ) from None
    try:
        same_name = validate_username(info.username, 1, 1024) == form["username"]
        same_email = validate_email(info.email) == form["email"]
    except ValidationError:
        same_name = same_email = False
    if not (same_name and same_email):
        raise RequestError(
            "invalid_csr", "the certificate request names another user or email", "csr"
        )
    return dataclasses.replace(info, username=form["username"], email=form["email"])


def _create(ctx: Context, form: dict[str, Any], info: CsrInfo, password_hash: str) -> None:
    _check_available(ctx, form)
    certificate = issue_certificate(ctx.identity, info)
    users.create_user(
        ctx.db,
        username=form["username"],
        password_hash=password_hash,
        email=form["email"],
        sex=form["sex"],
        age=form["age"],
        certificate=certificate,
        now=ctx.now(),
    )
    ctx.transparency.append("certificate", form["username"], certificate)
    log.info("user %s registered", form["username"])
    ctx.reply(
        {
            "certificate": certificate,
            "ca_certificate": ctx.identity.certificate_der,
            "transparency": ctx.transparency.certificate_proof(form["username"], certificate),
        }
    )
