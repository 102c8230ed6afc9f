"""The environment gives `tgcrm`'s flags their defaults (a flag given wins), and a malformed one is named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.stack_process import hermetic_env
from tgcrm.cli import build_parser


def test_the_environment_gives_the_flags_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGCRM_API_PORT", "60001")
    monkeypatch.setenv("TGCRM_STATE_DIR", "/tmp/elsewhere")
    args = build_parser().parse_args(["up"])
    assert (args.api_port, str(args.state_dir)) == (60001, "/tmp/elsewhere")
    assert build_parser().parse_args(["up", "--api-port", "60002"]).api_port == 60002


def test_an_empty_variable_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGCRM_API_PORT", "")
    monkeypatch.setenv("TGCRM_FUNCTIONS_PORT", "")
    assert build_parser().parse_args(["up"]).api_port == 54321
    assert build_parser().parse_args(["functions"]).port == 54331


def test_the_functions_flags_read_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGCRM_FUNCTIONS_PORT", "60003")
    assert build_parser().parse_args(["functions"]).port == 60003


@pytest.mark.parametrize("name", ["TGCRM_API_PORT", "TGCRM_FUNCTIONS_PORT"])
def test_a_malformed_variable_is_named_and_nothing_starts(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tgcrm", "up"], env={**hermetic_env(), name: "not-a-port"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"tgcrm: invalid environment variable: {name}"
