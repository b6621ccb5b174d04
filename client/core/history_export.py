"""History export: one conversation or all, to a self-contained HTML file and to JSON.

Why both: HTML is for people (open it in any browser, pictures inline as data URIs,
no network, no script), JSON is for programs (every field, stable names). Files that
are not pictures are copied into an `attachments` folder beside the two files and
linked by relative path, so the export folder can be moved as a whole. Attachments
not on this computer yet are downloaded first; one that cannot be fetched is listed
as missing instead of failing the export.

The work is pure apart from reading the local history and the attachment files:
`collect` pages through the store, `write_export` renders. Progress is reported as
(done, total) over messages, so a caller can show a bar.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from client.core.models import ChatMessage, Contact

FORMAT = "uchat-history/1"
PAGE = 500
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # no script, no network
INLINE_IMAGE_LIMIT = 8 * 1024 * 1024  # larger pictures are linked like files

Fetch = Callable[[ChatMessage], Path | None]  # a local copy of the attachment, or None
PageReader = Callable[[Contact, tuple[int, int] | None], list[ChatMessage]]
Progress = Callable[[int, int], None]


@dataclass
class ChatExport:
    contact: Contact
    messages: list[ChatMessage] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    html_path: Path
    json_path: Path
    messages: int
    attachments: int
    missing: int  # attachments that could not be fetched


def collect(
    contacts: Sequence[Contact],
    read_page: PageReader,
    cursor_of: Callable[[ChatMessage], tuple[int, int] | None],
) -> list[ChatExport]:
    """Every message of each chat, oldest first, read page by page from the store."""
    chats: list[ChatExport] = []
    for contact in contacts:
        pages: list[list[ChatMessage]] = []
        before: tuple[int, int] | None = None
        while True:
            page = read_page(contact, before)
            if not page:
                break
            pages.append(page)
            before = cursor_of(page[0])
            if len(page) < PAGE or before is None:
                break
        chats.append(ChatExport(contact, [m for page in reversed(pages) for m in page]))
    return chats


def write_export(
    chats: Sequence[ChatExport],
    folder: Path,
    account: str,
    fetch: Fetch,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ExportResult:
    """Write `history.html`, `history.json` and `attachments/` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    attachments_dir = folder / "attachments"
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    total = sum(len(chat.messages) for chat in chats)
    done = copied = missing = 0
    json_chats: list[dict[str, object]] = []
    html_chats: list[str] = []
    used_names: set[str] = set()
    for chat in chats:
        json_messages: list[dict[str, object]] = []
        rows: list[str] = []
        for message in chat.messages:
            local = fetch(message) if message.attachment is not None else None
            exported = _place_attachment(message, local, attachments_dir, used_names)
            if message.attachment is not None:
                copied += exported is not None
                missing += exported is None
            json_messages.append(_message_json(message, exported))
            rows.append(_message_html(message, local, exported))
            done += 1
            if progress is not None:
                progress(done, total)
        json_chats.append(
            {
                "kind": chat.contact.kind,
                "id": chat.contact.id,
                "name": chat.contact.name,
                "messages": json_messages,
            }
        )
        html_chats.append(_chat_html(chat.contact, rows))
    json_path, html_path = folder / "history.json", folder / "history.html"
    document = {"format": FORMAT, "account": account, "exported_at": stamp, "chats": json_chats}
    json_path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    html_path.write_text(_page_html(account, stamp, html_chats), encoding="utf-8")
    if progress is not None and total == 0:
        progress(0, 0)
    return ExportResult(html_path, json_path, total, copied, missing)


def _place_attachment(
    message: ChatMessage, local: Path | None, folder: Path, used: set[str]
) -> str | None:
    """Copy the attachment into the export; returns its relative path, or None."""
    if message.attachment is None or local is None or not local.is_file():
        return None
    folder.mkdir(exist_ok=True)
    name = _unique(Path(message.attachment.name).name or "attachment", used)
    shutil.copyfile(local, folder / name)
    return f"attachments/{name}"


def _unique(name: str, used: set[str]) -> str:
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, number = name, 1
    while candidate.casefold() in used:
        number += 1
        candidate = f"{stem} ({number}){suffix}"
    used.add(candidate.casefold())
    return candidate


def _time_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _message_json(message: ChatMessage, exported: str | None) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": message.message_id,
        "sender": message.sender,
        "time": message.time,
        "kind": message.kind,
        "outgoing": message.outgoing,
        "status": message.status,
    }
    if message.kind == "text":
        entry.update(text=message.text, font_size=message.font_size, color=message.color)
    if message.attachment is not None:
        entry["attachment"] = {
            "name": message.attachment.name,
            "size": message.attachment.size,
            "file": exported,
        }
    return entry


def _message_html(message: ChatMessage, local: Path | None, exported: str | None) -> str:
    side = "out" if message.outgoing else "in"
    head = (
        f'<div class="head"><b>{html.escape(message.sender)}</b> '
        f'<span class="time">{_time_text(message.time)}</span></div>'
    )
    if message.kind == "text":
        style = f"font-size:{int(message.font_size)}pt;color:{html.escape(message.color)}"
        body = f'<div class="body" style="{style}">{html.escape(message.text)}</div>'
    else:
        name = html.escape(message.attachment.name if message.attachment else "")
        if exported is None:
            body = f'<div class="body missing">{name} (not on this computer)</div>'
        elif message.kind == "image" and local is not None and _inline(local):
            data = base64.b64encode(local.read_bytes()).decode("ascii")
            kind = mimetypes.guess_type(local.name)[0] or "image/png"
            body = f'<div class="body"><img alt="{name}" src="data:{kind};base64,{data}"></div>'
        else:
            link = html.escape(exported, quote=True)
            body = f'<div class="body"><a href="{link}">{name}</a></div>'
    return f'<div class="msg {side}">{head}{body}</div>'


def _inline(path: Path) -> bool:
    return path.stat().st_size <= INLINE_IMAGE_LIMIT


def _chat_html(contact: Contact, rows: list[str]) -> str:
    title = html.escape(contact.name if contact.kind == "user" else f"{contact.name} #{contact.id}")
    return f"<section><h2>{title}</h2>{''.join(rows)}</section>"


def _page_html(account: str, stamp: str, chats: list[str]) -> str:
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>Uchat — {html.escape(account)}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; background: #f3f5f9;
  margin: 0 auto; max-width: 52em; padding: 1em; color: #1f2328; }}
section {{ background: #fff; border-radius: 8px; padding: 0.5em 1em 1em; margin-bottom: 1.5em; }}
.msg {{ margin: 0.6em 0; max-width: 80%; }}
.msg.out {{ margin-left: auto; text-align: right; }}
.head {{ font-size: 0.8em; color: #6b7280; }}
.body {{ display: inline-block; white-space: pre-wrap; padding: 0.4em 0.7em; border-radius: 8px;
  background: #eef1f5; text-align: left; }}
.out .body {{ background: #dbe8ff; }}
.missing {{ color: #a8071a; }}
img {{ max-width: 100%; }}
</style></head>
<body><h1>Uchat — {html.escape(account)}</h1><p class="head">{html.escape(stamp)}</p>
{"".join(chats)}
</body></html>
"""
