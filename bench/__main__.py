"""`python -m bench <scenario> [--quick] [--json FILE] [scenario options...]`.

`python -m bench list` names the scenarios; `python -m bench all [--quick]` runs the
suite (bench/suite.py). Anything after the scenario name that is not `--quick` or
`--json` goes to the scenario itself (`python -m bench relay --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from pathlib import Path

from bench.scenarios import SCENARIOS


def run_scenario(name: str, quick: bool, json_path: str | None, rest: list[str]) -> int:
    """Import the scenario's module and call its `main` with the assembled arguments."""
    scenario = SCENARIOS[name]
    module = importlib.import_module(scenario.module)
    argv = [*(scenario.quick if quick else ()), *rest]
    if scenario.server:
        argv += ["--json", json_path] if json_path else []
        status: int = module.main(argv)
        return status
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        status = module.main(argv)
    sys.stdout.write(captured.getvalue())
    if json_path:
        Path(json_path).write_text(captured.getvalue())
    return status


def main(argv: list[str] | None = None) -> int:
    # No -h of its own: after a scenario name, --help belongs to the scenario.
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0], add_help=False
    )
    parser.add_argument("scenario", nargs="?", choices=[*SCENARIOS, "all", "list"])
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON result here")
    parser.add_argument(
        "-h", "--help", action="store_true", help="this help; after a scenario, the scenario's"
    )
    args, rest = parser.parse_known_args(argv)
    if args.help and args.scenario not in (None, "list"):
        rest.append("--help")
    elif args.help or args.scenario is None:
        parser.print_help()
        return 0 if args.help else 2
    if args.scenario == "list":
        for name, scenario in SCENARIOS.items():
            print(f"{name:16} {scenario.module}")
        return 0
    if args.scenario == "all":
        from bench.suite import run_suite

        return run_suite(args.quick, args.json, rest)
    return run_scenario(args.scenario, args.quick, args.json, rest)


sys.exit(main())
