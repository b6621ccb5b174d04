"""Local history at scale: paging, search and summaries with 100,000 stored messages.

Fills a LocalStore with N messages spread over C chats (one transaction), then prints
JSON with the median milliseconds of each operation the GUI does on every click.

    python -m bench history [--messages 100000] [--chats 50] [--repeat 25]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from client.core.models import ChatKind, ChatMessage
from client.core.store import LocalStore

_ENGLISH_WORDS = (
    "the quick brown fox jumps over lazy dog meeting tomorrow lunch project deadline "
    "report budget review coffee weekend holiday train ticket please thanks sorry okay "
    "great idea later tonight morning office server release bug fix test deploy music "
    "movie dinner birthday party weather rain sunny cloud phone call email document"
)
_CHINESE_WORDS = (
    "你好 世界 今天 天气 很好 明天 开会 项目 进度 吃饭 周末 加班 谢谢 没问题 "
    "晚上 电影 生日 快乐 文件 发送 收到 好的 再见 上班 下班 同事 老板 会议室"
)
ENGLISH = _ENGLISH_WORDS.split()
CHINESE = _CHINESE_WORDS.split()
RARE_ENGLISH = "xylophone"  # planted in ~0.1% of messages
RARE_CHINESE = "量子计算"  # planted in ~0.1% of messages


def make_messages(count: int, chats: int, seed: int = 7) -> list[ChatMessage]:
    """Realistic-ish traffic: short lines, a third in Chinese, a few rare planted words."""
    rng = random.Random(seed)
    messages = []
    for index in range(count):
        chat = index % chats
        kind: ChatKind = "room" if chat % 5 == 0 else "user"
        if rng.random() < 0.33:
            words = rng.choices(CHINESE, k=rng.randint(2, 8))
            text = "".join(words)
        else:
            text = " ".join(rng.choices(ENGLISH, k=rng.randint(3, 14)))
        if rng.random() < 0.001:
            text += f" {RARE_ENGLISH} {RARE_CHINESE}"
        outgoing = rng.random() < 0.4
        messages.append(
            ChatMessage(
                message_id=f"{index:032x}",
                chat_kind=kind,
                chat_id=f"chat{chat}",
                sender="me" if outgoing else f"peer{chat}",
                time=1_700_000_000_000 + index * 1000 + rng.randint(-5000, 5000),
                kind="text",
                text=text,
                outgoing=outgoing,
                status="delivered" if outgoing else "received",
            )
        )
    return messages


def median_ms(operation: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def page_back(store: LocalStore, kind: ChatKind, chat_id: str, pages: int) -> int:
    """Open a chat and scroll up `pages` pages of 50; returns how many messages were read."""
    page = store.history(kind, chat_id, limit=50)
    seen = len(page)
    for _ in range(pages):
        cursor = store.history_cursor(page[0].message_id)
        page = store.history(kind, chat_id, limit=50, before=cursor)
        if not page:
            break
        seen += len(page)
    return seen


def run(messages: int, chats: int, repeat: int, directory: Path) -> dict[str, object]:
    store = LocalStore(directory / "history.sqlite3")
    batch = make_messages(messages, chats)
    started = time.perf_counter()
    added = store.add_messages(batch)
    fill_seconds = time.perf_counter() - started
    assert all(added)
    # Measure the store as a client finds it at login: reopened, the big fill checkpointed.
    store.close()
    store = LocalStore(directory / "history.sqlite3")
    chat_kind: ChatKind = "user"
    chat_id = "chat1"  # messages // chats messages, so 20 pages back exist
    results: dict[str, object] = {
        "messages": messages,
        "chats": chats,
        "repeat": repeat,
        "full_text": store.full_text,
        "fill_seconds_one_transaction": round(fill_seconds, 2),
        "first_history_page_ms": median_ms(
            lambda: store.history(chat_kind, chat_id, limit=50), repeat
        ),
        "search_english_common_ms": median_ms(lambda: store.search("meeting"), repeat),
        "search_english_rare_ms": median_ms(lambda: store.search(RARE_ENGLISH), repeat),
        "search_chinese_common_ms": median_ms(lambda: store.search("没问题"), repeat),
        "search_chinese_rare_ms": median_ms(lambda: store.search(RARE_CHINESE), repeat),
        "search_2char_common_like_ms": median_ms(lambda: store.search("开会"), repeat),
        "search_2char_rare_like_ms": median_ms(lambda: store.search("xy"), repeat),
        "chat_summaries_ms": median_ms(store.chat_summaries, repeat),
        "unread_ms": median_ms(lambda: store.unread(chat_kind, chat_id), repeat),
    }
    page_back_total = median_ms(lambda: page_back(store, chat_kind, chat_id, 20), repeat)
    results["page_back_20_pages_total_ms"] = page_back_total
    results["page_back_per_page_ms"] = round(page_back_total / 21, 3)
    store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--dir", type=Path, help="where to build the store (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        results = run(args.messages, args.chats, args.repeat, args.dir)
    else:
        with tempfile.TemporaryDirectory() as directory:
            results = run(args.messages, args.chats, args.repeat, Path(directory))
    print(json.dumps(results, indent=2))
    return 0
