"""Images and files in a conversation: pick and send (the size limit shown first),
save where the user chooses (dialogs start in Downloads), paste, thumbnails, the
full-size viewer, "open folder", and progress with a percentage and Cancel inside
the message itself.

Transfers run on workers; their progress reaches this panel only as the core's
`TransferProgress` events, drained on the Tk thread, so no worker touches a widget and
nothing polls.
"""

from __future__ import annotations

import dataclasses
import functools
import tkinter as tk
from pathlib import Path
from tkinter import filedialog
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from PIL import Image, ImageGrab

from client import i18n
from client.components.busy import alive
from client.components.desktop import Desktop, downloads_dir
from client.components.formatting import format_size
from client.components.image_viewer import ImageViewer, load_fitted, screen_bounds
from client.core import media
from client.core.event_types import TransferProgress
from client.core.models import ChatMessage
from client.forms.errors import describe_error
from common.errors import RequestError

if TYPE_CHECKING:
    from client.forms.chat_form import ChatPanel

IMAGE_PATTERNS = "*.png *.jpg *.jpeg *.gif *.bmp *.webp"
PASTED_DIR = "pasted"


def pasted_paths(text: str) -> list[Path]:
    """Files named by pasted text (a file manager copies paths or file:// URIs)."""
    paths: list[Path] = []
    for raw in text.splitlines():
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("file://"):
            entry = unquote(urlparse(entry).path)
        path = Path(entry)
        if not path.is_absolute() or not path.is_file():
            return []  # ordinary text: paste it as text
        paths.append(path)
    return paths


class AttachmentFlow:
    def __init__(self, window: ChatPanel) -> None:
        self.window = window
        self.app = window.app
        self._watched: dict[str, str] = {}  # attachment id -> message id, while it moves

    # ------------------------------------------------------------------ sending

    def limit_text(self) -> str:
        client = self.app.client
        limit = client.max_attachment_size if client is not None else 0
        return format_size(limit) if limit > 0 else ""

    def send(self, image: bool) -> None:
        client = self.app.client
        if client is None:
            return
        types = [(i18n.t("chat.all_files"), "*")]
        if image:
            types.insert(0, (i18n.t("chat.images"), IMAGE_PATTERNS))
        limit = self.limit_text()
        title = i18n.t("chat.choose_image" if image else "chat.choose_file", limit=limit)
        chosen = filedialog.askopenfilename(
            parent=self.window, filetypes=types, title=title, initialdir=str(downloads_dir())
        )
        if chosen:
            self.send_path(Path(chosen), image)

    def send_path(self, path: Path, image: bool) -> None:
        client = self.app.client
        if client is None:
            return
        send = client.send_image if image else client.send_file
        self.app.run(send, self.window.target, path, on_result=self._sent, on_error=self._failed)

    def paste(self) -> bool:
        """Ctrl+V: a picture on the clipboard, or copied files, are sent; True if so."""
        try:
            grabbed = ImageGrab.grabclipboard()
        except (NotImplementedError, OSError):
            grabbed = None  # no clipboard image support here (no xclip / wl-paste)
        if isinstance(grabbed, Image.Image):
            self.send_path(self._save_pasted(grabbed), image=True)
            return True
        try:
            text = self.window.clipboard_get()
        except tk.TclError:
            return False
        paths = pasted_paths(text)
        self.send_paths(paths)
        return bool(paths)

    def send_paths(self, paths: list[Path]) -> None:
        """Pasted or dropped files: pictures go as images, the rest as files."""
        for path in paths:
            self.send_path(path, image=media.detect_image(path) is not None)

    def _save_pasted(self, picture: Image.Image) -> Path:
        folder = self.app.settings.data_dir / PASTED_DIR
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        number = len(list(folder.glob("pasted-*.png"))) + 1
        path = folder / f"pasted-{number}.png"
        picture.save(path, "PNG")
        return path

    def sending(self, message: ChatMessage) -> None:
        """Our attachment message is stored: follow its upload inside the message."""
        if message.outgoing and message.status == "sending" and message.attachment is not None:
            self._watch(message.attachment.attachment_id, message.message_id, cancel=True)

    def _sent(self, message: ChatMessage) -> None:
        if alive(self.window):
            self.window.show_message(message)
        self.settled(message)

    def cancel(self, message: ChatMessage) -> None:
        client = self.app.client
        if client is not None:
            self.app.run(client.cancel_upload, message, on_error=self._failed)

    # ------------------------------------------------------------------ saving

    def save(self, message: ChatMessage) -> None:
        """The Save button of a received file: ask where, then download there."""
        client = self.app.client
        if client is None or message.attachment is None:
            return
        shown = self.window.transcript.get(message.message_id) or message
        local = shown.attachment.local_path if shown.attachment else None
        if local is not None and Path(local).is_file():  # saved already: show where
            self.open_folder(Path(local))
            return
        folder = filedialog.askdirectory(
            parent=self.window, title=i18n.t("chat.save_to"), initialdir=str(downloads_dir())
        )
        if not folder:
            return
        attachment_id = message.attachment.attachment_id
        self._watch(attachment_id, message.message_id, cancel=False)
        self.app.run(
            client.download,
            message,
            Path(folder),
            on_result=functools.partial(self._saved, message),
            on_error=functools.partial(self._failed, attachment_id=attachment_id),
        )

    def _saved(self, message: ChatMessage, path: Path) -> None:
        if message.attachment is not None:
            self._done(message.attachment.attachment_id)
        if alive(self.window):
            self._record_path(message, path)
            self.window.show_info(
                i18n.t("chat.saved_to", path=str(path)),
                level="success",
                actions=((i18n.t("chat.open_folder"), functools.partial(self.open_folder, path)),),
            )

    def open_folder(self, path: Path) -> None:
        if not Desktop.open_folder(path):
            self.window.show_info(i18n.t("chat.open_folder_failed", path=str(path.parent)))

    def _record_path(self, message: ChatMessage, path: Path) -> ChatMessage:
        attachment = message.attachment
        if attachment is None:
            return message
        updated = dataclasses.replace(
            message, attachment=dataclasses.replace(attachment, local_path=path)
        )
        self.window.transcript.replace(updated)
        if updated.kind == "file":
            self.window.view.mark_saved(updated)
        return updated

    # ------------------------------------------------------------------ pictures

    def thumbnails(self, messages: list[ChatMessage]) -> None:
        """Images: download if needed (off the Tk thread), then show a thumbnail.

        When either step fails the "[Image] name" line simply stays.
        """
        client = self.app.client
        if client is None:
            return
        for message in messages:
            if message.kind != "image" or message.attachment is None:
                continue
            path = message.attachment.local_path
            if path is not None and Path(path).is_file():
                self._render(message, Path(path))
            elif not message.outgoing:
                self.app.run(
                    client.download,
                    message,
                    on_result=functools.partial(self._downloaded_image, message),
                    on_error=_ignore,
                )

    def _downloaded_image(self, message: ChatMessage, path: Path) -> None:
        if alive(self.window):
            self._render(self._record_path(message, path), path)

    def _render(self, message: ChatMessage, path: Path) -> None:
        cache = self.app.settings.data_dir / "thumbnails"
        width, height = media.THUMBNAIL_SIZE  # for 96 dpi: larger on denser screens
        size = (self.app.theme.px(width), self.app.theme.px(height))
        self.app.run(
            media.thumbnail,
            path,
            cache,
            size,
            on_result=functools.partial(self._show_thumbnail, message.message_id),
            on_error=_ignore,
        )

    def _show_thumbnail(self, message_id: str, thumbnail: Path) -> None:
        if alive(self.window):
            image = tk.PhotoImage(master=self.window, file=thumbnail)
            self.window.view.show_image(message_id, image)

    def open_image(self, message: ChatMessage) -> None:
        """A click on a thumbnail: the picture at full size (decoded on a worker)."""
        shown = self.window.transcript.get(message.message_id) or message
        path = shown.attachment.local_path if shown.attachment else None
        if path is None or not Path(path).is_file():
            return
        name = shown.attachment.name if shown.attachment else ""
        self.app.run(
            load_fitted,
            Path(path),
            screen_bounds(self.window),
            on_result=functools.partial(self._show_viewer, name),
            on_error=self._failed,
        )

    def _show_viewer(self, name: str, picture: Image.Image | None) -> None:
        if picture is not None and alive(self.window):
            self.viewer = ImageViewer(self.window, picture, name)

    # ------------------------------------------------------------------ progress

    def progress(self, event: TransferProgress) -> None:
        """A `TransferProgress` event: move the percentage if it is one of ours."""
        message_id = self._watched.get(event.attachment_id)
        if message_id is None or event.total <= 0 or not alive(self.window):
            return
        upload = event.direction == "upload"
        self.window.view.set_progress(message_id, min(event.done / event.total, 1.0), upload)

    @property
    def active(self) -> bool:
        return bool(self._watched)

    def _watch(self, attachment_id: str, message_id: str, cancel: bool) -> None:
        self._watched[attachment_id] = message_id
        if alive(self.window):
            self.window.view.set_progress(message_id, 0.0, cancel)

    def _done(self, attachment_id: str) -> None:
        message_id = self._watched.pop(attachment_id, None)
        if message_id is not None and alive(self.window):
            self.window.view.set_progress(message_id, None)

    def settled(self, message: ChatMessage) -> None:
        """An outgoing message left `sending`: its upload is over, either way."""
        if message.status != "sending" and message.attachment is not None:
            self._done(message.attachment.attachment_id)

    def _failed(self, exc: BaseException, attachment_id: str = "") -> None:
        if attachment_id:
            self._done(attachment_id)
        if not alive(self.window):
            return
        if isinstance(exc, RequestError) and exc.code == "upload_cancelled":
            return  # the user asked for it; the message shows ✗
        if isinstance(exc, RequestError) and exc.code == "attachment_too_large":
            text = i18n.t("error.attachment_too_large_limit", limit=self.limit_text())
        else:
            text = describe_error(exc).message
        self.window.show_info(text, level="warning")


def _ignore(_exc: BaseException) -> None:
    """A thumbnail that cannot be made is not worth an error banner."""
