"""Images and files in a chat window: pick and send, save where the user chooses,
thumbnails for images, and the progress bar while a transfer runs.

Transfers run on workers; their progress reaches this window only as the core's
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

from client import i18n
from client.components.busy import alive
from client.core import media
from client.core.event_types import TransferProgress
from client.core.models import ChatMessage
from client.forms.errors import describe_error

if TYPE_CHECKING:
    from client.forms.chat_form import ChatWindow

IMAGE_PATTERNS = "*.png *.jpg *.jpeg *.gif *.bmp *.webp"


class AttachmentFlow:
    def __init__(self, window: ChatWindow) -> None:
        self.window = window
        self.app = window.app
        self._watched: dict[str, float] = {}  # attachment id -> fraction done

    # ------------------------------------------------------------------ sending

    def send(self, image: bool) -> None:
        client = self.app.client
        if client is None:
            return
        types = [(i18n.t("chat.all_files"), "*")]
        if image:
            types.insert(0, (i18n.t("chat.images"), IMAGE_PATTERNS))
        chosen = filedialog.askopenfilename(parent=self.window, filetypes=types)
        if not chosen:
            return
        send = client.send_image if image else client.send_file
        self.app.run(
            send,
            self.window.target,
            Path(chosen),
            on_result=self._sent,
            on_error=self._failed,
        )

    def sending(self, message: ChatMessage) -> None:
        """Our attachment message is stored: follow its upload's progress."""
        if message.outgoing and message.status == "sending" and message.attachment is not None:
            self._watch(message.attachment.attachment_id)

    def _sent(self, message: ChatMessage) -> None:
        if message.attachment is not None:
            self._done(message.attachment.attachment_id)
        if alive(self.window):
            self.window.show_message(message)

    # ------------------------------------------------------------------ saving

    def save(self, message: ChatMessage) -> None:
        """The Save button of a received file: ask where, then download there."""
        client = self.app.client
        if client is None or message.attachment is None:
            return
        folder = filedialog.askdirectory(parent=self.window, title=i18n.t("chat.save_to"))
        if not folder:
            return
        attachment_id = message.attachment.attachment_id
        self._watch(attachment_id)
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
            self.window.show_info(i18n.t("chat.saved_to", path=str(path)), level="success")

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

    # ------------------------------------------------------------------ thumbnails

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
        self.app.run(
            media.thumbnail,
            path,
            cache,
            on_result=functools.partial(self._show_thumbnail, message.message_id),
            on_error=_ignore,
        )

    def _show_thumbnail(self, message_id: str, thumbnail: Path) -> None:
        if alive(self.window):
            image = tk.PhotoImage(master=self.window, file=thumbnail)
            self.window.view.show_image(message_id, image)

    # ------------------------------------------------------------------ progress

    def progress(self, event: TransferProgress) -> None:
        """A `TransferProgress` event: move the bar if it is one of ours."""
        if event.attachment_id not in self._watched or event.total <= 0:
            return
        self._watched[event.attachment_id] = min(event.done / event.total, 1.0)
        self._show()

    @property
    def active(self) -> bool:
        return bool(self._watched)

    def _watch(self, attachment_id: str) -> None:
        self._watched[attachment_id] = 0.0
        self._show()

    def _done(self, attachment_id: str) -> None:
        self._watched.pop(attachment_id, None)
        self._show()

    def _show(self) -> None:
        """One bar for what this window moves: the mean of its transfers."""
        if not alive(self.window):
            return
        if not self._watched:
            self.window.composer.show_progress(None)
            return
        self.window.composer.show_progress(sum(self._watched.values()) / len(self._watched))

    def settled(self, message: ChatMessage) -> None:
        """An outgoing message left `sending`: its upload is over, either way."""
        if message.status != "sending" and message.attachment is not None:
            self._done(message.attachment.attachment_id)

    def _failed(self, exc: BaseException, attachment_id: str = "") -> None:
        if attachment_id:
            self._done(attachment_id)
        if alive(self.window):
            self.window.show_info(describe_error(exc).message, level="warning")


def _ignore(_exc: BaseException) -> None:
    """A thumbnail that cannot be made is not worth an error banner."""
