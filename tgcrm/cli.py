"""`tgcrm`: one command line for the whole system; each part registers its own subcommands.

Each part's `cli` module only declares arguments; the heavy imports (Telethon, uvicorn) happen in its handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from pydantic import ValidationError

from crm_server import cli as crm_server_cli
from functions import cli as functions_cli
from safeguards.private_files import use_private_umask
from tgcrm import cluster_command, local_commands, up_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tgcrm", description="telegram-crm: CRM messaging through Telegram")
    parser.add_argument("--version", action="version", version=f"tgcrm {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local_commands.add_commands(subparsers)
    up_command.add_commands(subparsers)
    cluster_command.add_commands(subparsers)
    crm_server_cli.add_commands(subparsers)
    functions_cli.add_commands(subparsers)
    return parser


def installed_version() -> str:
    """The distribution's version (pyproject.toml's, as installed), for `tgcrm --version`."""
    try:
        return metadata.version("telegram-crm")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    # What any command (and its children: PostgreSQL's log, the SQLite stores) creates is this user's alone.
    use_private_umask()
    try:
        parser = build_parser()
    except ValidationError as exc:  # a flag's default from the environment (command_line_settings.py) is malformed
        names = ", ".join(str(error["loc"][0]) for error in exc.errors())
        print(f"tgcrm: invalid environment variable: {names}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
