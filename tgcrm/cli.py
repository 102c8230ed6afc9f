"""`tgcrm`: one command line for the whole system; each part registers its own subcommands.

Each part's `cli` module only declares arguments; the heavy imports (Telethon, uvicorn) happen in its handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crm_server import cli as crm_server_cli
from functions import cli as functions_cli
from safeguards.private_files import use_private_umask
from tgcrm import local_commands, up_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tgcrm", description="telegram-crm: CRM messaging through Telegram")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local_commands.add_commands(subparsers)
    up_command.add_commands(subparsers)
    crm_server_cli.add_commands(subparsers)
    functions_cli.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # What any command (and its children: PostgreSQL's log, the SQLite stores) creates is this user's alone.
    use_private_umask()
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
