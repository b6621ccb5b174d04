"""Start the Uchat desktop client: `python run_client.py [--host H] [--port P] ...`."""

from __future__ import annotations

import argparse
import os
import sys
import tkinter as tk
from collections.abc import Sequence
from pathlib import Path

from platformdirs import user_data_dir

from client import i18n
from client.ui import App, UiSettings
from common.config import load_config
from common.errors import ConfigError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_client.py", description="Uchat desktop client")
    parser.add_argument("--host", help="server address (default from config)")
    parser.add_argument("--port", type=int, help="server port (default from config)")
    parser.add_argument("--data-dir", help="folder for your keys, history and downloads")
    parser.add_argument("--config", help="path of config.json")
    parser.add_argument("--lang", choices=i18n.LANGUAGES, help="display language")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(
            args.config,
            overrides={
                "client.host": args.host,
                "client.port": args.port,
                "client.data_dir": args.data_dir,
                "language": args.lang,
            },
        )
    except ConfigError as exc:
        print(f"uchat client: {exc}", file=sys.stderr)
        return 2
    i18n.use_language(i18n.detect_language(config.language, os.environ))
    data_dir = Path(config.client.data_dir or user_data_dir("uchat", appauthor=False))
    try:
        root = tk.Tk(className="Uchat")
    except tk.TclError as exc:
        print(
            f"uchat client: cannot open a window ({exc}); is a display available?", file=sys.stderr
        )
        return 1
    app = App(root, UiSettings.from_config(config, data_dir))
    try:
        root.mainloop()
    except KeyboardInterrupt:  # Ctrl-C in the terminal: leave as if the window closed
        app.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
