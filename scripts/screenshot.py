"""Render docs/screenshot.png: the contact window and a chat, with real data.

Starts a real server on a free port, registers three users (alice is driven by the
GUI, bob and carol are headless clients), makes them friends, exchanges a few
messages in English and Chinese with different sizes and colours plus an image, then
logs alice in through the login form, opens the chat with bob and grabs the screen.

Run under a display; without one it starts its own Xvfb of `--screen` size:
    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--lang en|zh_CN]
        [--screen 1366x768] [--dpi 96|192]
`--dpi 192` sets Tk's scaling to 192/72 points per pixel, as a 192 dpi desktop does.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageGrab

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client import i18n  # noqa: E402
from client.core.client import ChatClient  # noqa: E402
from client.forms.contacts_form import ContactsForm  # noqa: E402
from client.forms.login_form import LoginForm  # noqa: E402
from client.ui import App, UiSettings  # noqa: E402

PASSWORD = secrets.token_urlsafe(12) + "-7a"  # throwaway accounts on a throwaway server
BACKDROP = (226, 232, 241)
MARGIN = 36
SERVER_START_TIMEOUT = 20.0


def start_xvfb(screen: str = "1280x800") -> tuple[str, subprocess.Popen[bytes]]:
    """An Xvfb on a free display number (it reports the number on a pipe)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("no DISPLAY and no Xvfb: install xvfb or run under a desktop")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(  # noqa: S603 - fixed argv: Xvfb / our own server script
        [xvfb, "-displayfd", str(write_end), "-screen", "0", f"{screen}x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    if not number.isdigit():
        proc.terminate()
        raise SystemExit("Xvfb did not start")
    return f":{number}", proc


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, UCHAT_SERVER_SCRYPT_N="1024", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv: Xvfb / our own server script
        [sys.executable, str(REPO / "run_server.py"), "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    if proc.stdout is None:
        raise SystemExit("the server's output is not readable")
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"Uchat server listening on .*:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    raise SystemExit("the server did not start")


def headless_user(port: int, data_dir: Path, name: str, sex: str, age: int) -> ChatClient:
    client = ChatClient("127.0.0.1", port, data_dir / name)
    client.register(name, PASSWORD, f"{name}@example.org", sex, age)
    client.login(name, PASSWORD)
    return client


def befriend(asker: ChatClient, friend: ChatClient, name: str) -> None:
    asker.add_friend(name)
    friend.wait_for_event(lambda e: e.kind == "friend_request")
    friend.answer_friend_request(asker.username or "", True)
    asker.wait_for_event(lambda e: e.kind == "contact_added")


def sample_image(path: Path) -> Path:
    """A small picture to send: a sunrise over hills."""
    image = Image.new("RGB", (360, 220), (120, 180, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((230, 40, 300, 110), fill=(255, 214, 102))
    draw.polygon([(0, 220), (110, 90), (220, 220)], fill=(67, 160, 104))
    draw.polygon([(140, 220), (270, 110), (360, 200), (360, 220)], fill=(46, 125, 84))
    image.save(path)
    return path


def pump_until(root: tk.Tk, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("the GUI did not reach the expected state in time")
        root.update()
        time.sleep(0.01)


def prepare_alice(port: int, data_dir: Path) -> None:
    """Register alice with the GUI's data folder, so the GUI holds her keys."""
    alice = ChatClient("127.0.0.1", port, data_dir)
    alice.register("alice", PASSWORD, "alice@example.org", "female", 24)
    alice.close()


def conversation(bob: ChatClient, carol: ChatClient, work: Path) -> None:
    """What alice finds when she logs in (all delivered as offline messages)."""
    bob.send_text("alice", "Hi Alice! 周末一起去爬山吗？", 13, "#1f2328")
    bob.send_text("alice", "The weather looks perfect on Saturday.", 12, "#2f6fed")
    bob.send_image("alice", sample_image(work / "hills.png"))
    bob.send_text("alice", "这是上次拍的照片, took it from the top!", 16, "#c2410c")
    carol.send_text("alice", "Don't forget the meeting at 3 pm.", 12, "#1f2328")
    carol.send_text("alice", "会议资料已经发到群里了。", 12, "#7c3aed")


def gui_scene(root: tk.Tk, app: App, bob: ChatClient) -> None:
    form = app.form
    if not isinstance(form, LoginForm):
        raise SystemExit("the login form is not shown")
    form.username.set_value("alice")
    form.password.set_value(PASSWORD)
    form.submit()
    pump_until(root, lambda: isinstance(app.form, ContactsForm))
    contacts = app.form
    if not isinstance(contacts, ContactsForm):
        raise SystemExit("the contact list is not shown")
    pump_until(root, lambda: contacts.item("user", "carol") is not None)
    group = app.require_client().create_room("Hiking club 爬山群")
    bob.join_room(int(group.id))
    pump_until(root, lambda: contacts.item("user", "bob") is not None)
    bob_contact = next(c for c in contacts.contacts if c.id == "bob")
    chat = app.open_chat(bob_contact)
    pump_until(root, lambda: chat.view.image_count() > 0, timeout=30)
    chat.composer.set_text("Sounds great! 周六早上九点见")
    chat.send_message()
    pump_until(root, lambda: len(chat.transcript) >= 5)
    bob.wait_for_event(lambda e: e.kind == "message")
    pump_until(root, lambda: "\u2713\u2713" in chat.view.text.get("1.0", "end"), timeout=10)
    contacts.select(bob_contact)
    chat.composer.input.focus_set()
    settle(root)


def settle(root: tk.Tk, seconds: float = 0.6) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        root.update()
        time.sleep(0.02)


def compose(windows: list[tuple[int, int, int, int]], display: str) -> Image.Image:
    """The windows on a soft backdrop with shadows, as they sit on the screen."""
    screen = ImageGrab.grab(xdisplay=display)
    left = min(x for x, _, _, _ in windows) - MARGIN
    top = min(y for _, y, _, _ in windows) - MARGIN
    right = max(x + w for x, _, w, _ in windows) + MARGIN
    bottom = max(y + h for _, y, _, h in windows) + MARGIN
    canvas = Image.new("RGB", (right - left, bottom - top), BACKDROP)
    shadow = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(shadow)
    for x, y, w, h in windows:
        draw.rectangle((x - left + 4, y - top + 8, x - left + w + 4, y - top + h + 8), fill=90)
    shadow = shadow.filter(ImageFilter.GaussianBlur(10))
    canvas.paste(Image.new("RGB", canvas.size, (90, 100, 120)), (0, 0), shadow)
    for x, y, w, h in windows:
        canvas.paste(screen.crop((x, y, x + w, y + h)), (x - left, y - top))
    return canvas


def window_box(widget: tk.Misc) -> tuple[int, int, int, int]:
    widget.update_idletasks()
    return widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()


def run(out: Path, display: str, language: str, dpi: int = 96) -> None:
    i18n.use_language(language)
    with tempfile.TemporaryDirectory(prefix="uchat-shot-") as tmp:
        work = Path(tmp)
        server, port = start_server(work / "server")
        bob = carol = None
        try:
            prepare_alice(port, work / "alice")
            bob = headless_user(port, work, "bob", "male", 26)
            carol = headless_user(port, work, "carol", "female", 25)
            gui = ChatClient("127.0.0.1", port, work / "alice")
            gui.login("alice", PASSWORD)
            befriend(bob, gui, "alice")
            befriend(carol, gui, "alice")
            gui.close()
            conversation(bob, carol, work)
            carol.close()
            root = tk.Tk(className="Uchat", screenName=display)
            root.tk.call("tk", "scaling", dpi / 72)
            root.geometry("+0+0")
            app = App(root, UiSettings("127.0.0.1", port, work / "alice"))
            gui_scene(root, app, bob)
            popped = [p.winfo_toplevel() for p in app.chats.values() if p.popped]
            boxes = [window_box(root), *(window_box(w) for w in popped)]
            out.parent.mkdir(parents=True, exist_ok=True)
            compose(boxes, display).save(out)
            app.quit()
        finally:
            if bob is not None:
                bob.close()
            server.terminate()
            server.wait(10)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--lang", choices=i18n.LANGUAGES, default="en")
    parser.add_argument("--screen", default="1366x768", help="the Xvfb screen, WxH")
    parser.add_argument("--dpi", type=int, default=96, help="96, or 192 for a high-dpi screen")
    args = parser.parse_args()
    xvfb = None
    display = os.environ.get("DISPLAY", "")
    if not display:
        display, xvfb = start_xvfb(args.screen)
    try:
        run(args.out.resolve(), display, args.lang, args.dpi)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
