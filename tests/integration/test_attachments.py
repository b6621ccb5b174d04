"""Files and images end to end: digests match after the trip, progress is reported, chat
keeps flowing during a big upload, the size limit is enforced before any byte moves,
and a received file can never be saved outside the download folder."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from client.core import ChatMessage
from client.core.bodies import attachment_body
from common.errors import RequestError
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import (
    Accounts,
    User,
    befriend,
    befriended_pair,
    make_accounts,
    serve_one_module,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)

MB = 1024 * 1024


@pytest.fixture
def pair(shared_server: RunningServer, accounts: Accounts) -> tuple[User, User]:
    return befriended_pair(shared_server, accounts)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(MB):
            digest.update(block)
    return digest.hexdigest()


def noise_png(path: Path, side: int = 600) -> Path:
    """A real PNG of random pixels: incompressible, so about side*side*3 bytes."""
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, format="PNG")
    return path


def assert_progress_ends_at_total(calls: list[tuple[int, int]]) -> None:
    assert calls, "the progress callback was never called"
    dones = [done for done, _ in calls]
    totals = {total for _, total in calls}
    assert len(totals) == 1, totals
    assert dones == sorted(dones) and len(set(dones)) == len(dones), dones  # strictly rising
    assert dones[-1] == totals.pop()


def test_a_one_megabyte_png_arrives_with_the_same_digest(
    pair: tuple[User, User], tmp_path: Path
) -> None:
    alice, bob = pair
    picture = noise_png(tmp_path / "noise.png")
    assert MB <= picture.stat().st_size < 1.2 * MB

    upload: list[tuple[int, int]] = []
    sent = alice.client.send_image(bob.name, picture, progress=lambda d, t: upload.append((d, t)))
    assert sent.kind == "image" and sent.status in ("sent", "delivered")
    assert_progress_ends_at_total(upload)
    assert upload[-1][1] >= picture.stat().st_size  # ciphertext: a little larger
    attachment_id = sent.attachment.attachment_id if sent.attachment else ""
    events = alice.events.wait("transfer", attachment_id=attachment_id, direction="upload")
    assert events[-1].data["done"] == events[-1].data["total"] == upload[-1][1]

    received = bob.events.message(sent.message_id)
    assert received.kind == "image" and received.attachment is not None
    assert (received.attachment.name, received.attachment.size) == (
        "noise.png",
        picture.stat().st_size,
    )
    download: list[tuple[int, int]] = []
    path = bob.client.download(
        received, tmp_path / "inbox", progress=lambda d, t: download.append((d, t))
    )
    assert sha256_of(path) == sha256_of(picture)
    assert_progress_ends_at_total(download)
    with Image.open(path) as image:
        assert image.size == (600, 600)
    [stored] = bob.client.history(alice.name)
    assert stored.attachment is not None and stored.attachment.local_path == path


def test_fifty_megabytes_arrive_intact_while_chat_keeps_flowing(
    pair: tuple[User, User], tmp_path: Path
) -> None:
    alice, bob = pair
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        for _ in range(50):
            out.write(os.urandom(MB))
    progress: list[tuple[int, int]] = []
    first_chunk = threading.Event()

    def on_progress(done: int, total: int) -> None:
        progress.append((done, total))
        if done > 0:
            first_chunk.set()

    outcome: dict[str, Any] = {}

    def upload() -> None:
        try:
            outcome["message"] = alice.client.send_file(bob.name, big, progress=on_progress)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    uploader = threading.Thread(target=upload, name="test-upload")
    uploader.start()
    try:
        assert first_chunk.wait(30), "the upload never got going"
        chat = alice.client.send_text(bob.name, "sent while the big file uploads")
        bob.events.message(chat.message_id)
        done_when_chat_arrived, total = progress[-1]
        assert done_when_chat_arrived < total, "the chat message waited for the whole upload"
    finally:
        uploader.join(120)
    assert "error" not in outcome, outcome
    sent: ChatMessage = outcome["message"]
    assert sent.status in ("sent", "delivered")
    assert_progress_ends_at_total(progress)

    received = bob.events.message(sent.message_id, timeout=30)
    order = [m.message_id for m in bob.events.messages()]
    assert order.index(chat.message_id) < order.index(sent.message_id)
    assert received.attachment is not None and received.attachment.size == 50 * MB
    path = bob.client.download(received, tmp_path / "inbox")
    assert path.stat().st_size == 50 * MB
    assert sha256_of(path) == sha256_of(big)


def test_a_non_image_sent_as_an_image_goes_as_a_file(
    pair: tuple[User, User], tmp_path: Path
) -> None:
    alice, bob = pair
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"this is not a picture at all\n" * 10)
    truncated = tmp_path / "broken.png"
    truncated.write_bytes(noise_png(tmp_path / "real.png", side=64).read_bytes()[:200])

    for path in (fake, truncated):
        sent = alice.client.send_image(bob.name, path)
        assert sent.kind == "file"
        received = bob.events.message(sent.message_id)
        assert received.kind == "file" and received.attachment is not None
        assert received.attachment.name == path.name
        downloaded = bob.client.download(received, tmp_path / "inbox")
        assert downloaded.read_bytes() == path.read_bytes()


def test_a_file_over_the_limit_is_refused_before_anything_is_uploaded(
    server_factory: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    server = server_factory(env={"UCHAT_SERVER_MAX_ATTACHMENT_SIZE": "100000"}, name="small")
    alice = accounts.user(server, "alice")
    bob = accounts.user(server, "bob")
    befriend(alice, bob)
    too_big = tmp_path / "too big.bin"
    too_big.write_bytes(os.urandom(200_000))

    calls: list[tuple[int, int]] = []
    with pytest.raises(RequestError) as refused:
        alice.client.send_file(bob.name, too_big, progress=lambda d, t: calls.append((d, t)))
    assert refused.value.code == "attachment_too_large"
    assert "100000" in refused.value.message
    assert calls == []
    assert alice.events.matching("transfer") == []
    assert list((server.data_dir / "attachments").iterdir()) == []  # not one byte sent
    assert alice.client.history(bob.name) == []

    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(50_000))
    sent = alice.client.send_file(bob.name, small)
    received = bob.events.message(sent.message_id)
    assert bob.client.download(received, tmp_path / "inbox").read_bytes() == small.read_bytes()
    bob.events.stays_quiet("message", lambda e: e.data["message"].message_id != sent.message_id)


HOSTILE_NAMES = [
    ("../../evil.txt", "evil.txt"),
    ("/etc/passwd", "passwd"),
    ("..", "download"),
    ("a/../../b.txt", "b.txt"),
    ("..\\..\\evil2.txt", "evil2.txt"),
    (".hidden", "hidden"),
    ("report\u202etxt.exe", "reporttxt.exe"),
]


def test_hostile_file_names_from_a_sender_stay_in_the_download_folder(
    pair: tuple[User, User], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender's client is patched to seal a hostile name, as a modified client could."""
    alice, bob = pair
    source = tmp_path / "innocent.txt"
    source.write_text("payload", encoding="utf-8")
    inbox = tmp_path / "deep" / "inbox"

    for hostile, expected in HOSTILE_NAMES:
        monkeypatch.setattr(  # the seam ChatClient keeps for a modified sender
            "client.core.client.attachment_body",
            lambda kind, attachment, name=hostile: attachment_body(
                kind, dataclasses.replace(attachment, name=name)
            ),
        )
        sent = alice.client.send_file(bob.name, source)
        received = bob.events.message(sent.message_id)
        assert received.attachment is not None and received.attachment.name == hostile
        path = bob.client.download(received, inbox)
        assert path.parent == inbox and path.name == expected, (hostile, path)
        assert path.read_text(encoding="utf-8") == "payload"

    everything = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    outside = {p for p in everything if p.parts[:2] != ("deep", "inbox")}
    assert not [p for p in outside if p.name.startswith(("evil", "passwd", "b.txt"))]

    again = bob.client.download(bob.events.messages()[0], inbox)  # same name: not overwritten
    assert again.parent == inbox and again.name == "evil (1).txt"
    default = bob.client.download(bob.events.messages()[0])
    assert default.name == "evil.txt" and default.resolve().is_relative_to(bob.data_dir.resolve())


def test_local_file_names_that_look_like_paths_are_sanitised(
    pair: tuple[User, User], tmp_path: Path
) -> None:
    """Without patching: Linux allows backslashes and bidi controls in a real file name."""
    alice, bob = pair
    for name, expected in [
        ("..\\..\\evil.txt", "evil.txt"),
        ("photo\u202egnp.exe", "photognp.exe"),
    ]:
        source = tmp_path / name
        source.write_bytes(b"data " + name.encode())
        sent = alice.client.send_file(bob.name, source)
        received = bob.events.message(sent.message_id)
        assert received.attachment is not None and received.attachment.name == name
        path = bob.client.download(received, tmp_path / "inbox")
        assert (path.parent, path.name) == (tmp_path / "inbox", expected)
        assert path.read_bytes() == source.read_bytes()
