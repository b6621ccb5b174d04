"""Start the Uchat server: `python run_server.py --port 9999 --data-dir data/server`."""

from __future__ import annotations

import sys

from server.app import main

if __name__ == "__main__":
    sys.exit(main())
