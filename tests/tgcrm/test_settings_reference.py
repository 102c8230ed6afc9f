"""docs/configuration.md and .env.example list exactly the settings the code has, each with its default and purpose,
and every settings class of every package is in the reference."""

from __future__ import annotations

import importlib
import pkgutil
import re

from pydantic_settings import BaseSettings

from tgcrm import settings_reference
from tgcrm.settings_reference import DOCS_FILE, ENV_EXAMPLE_FILE, REGENERATE, sections, settings_classes

PACKAGES = ("crm_server", "functions", "supabase_local", "tgcrm", "safeguards")


def documented_variables() -> set[tuple[str, str]]:
    """(section title, variable) for each table row of docs/configuration.md."""
    rows, section = set(), ""
    for line in DOCS_FILE.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        match = re.match(r"\| `([A-Z0-9_]+)` \|", line)
        if match:
            rows.add((section, match.group(1)))
    return rows


def test_the_docs_list_every_setting_and_none_that_is_gone() -> None:
    in_code = {(section.title, setting.variable) for section in sections() for setting in section.settings}
    in_docs = documented_variables()
    assert not in_code - in_docs, f"missing from {DOCS_FILE.name} (run `{REGENERATE}`): {sorted(in_code - in_docs)}"
    assert not in_docs - in_code, f"{DOCS_FILE.name} lists settings that no longer exist: {sorted(in_docs - in_code)}"


def test_the_generated_files_are_up_to_date() -> None:
    assert settings_reference.main(["--check"]) == 0, f"run `{REGENERATE}`"


def test_every_setting_has_a_purpose() -> None:
    silent = [f"{section.title}: {setting.variable}" for section in sections() for setting in section.settings
              if len(setting.purpose) < 10]
    assert not silent, f"give these fields a docstring (or description=): {silent}"


def test_env_example_names_every_variable() -> None:
    text = ENV_EXAMPLE_FILE.read_text()
    variables = {setting.variable for section in sections() for setting in section.settings}
    assert {name for name in variables if f"# {name}=" not in text} == set()


def test_secrets_are_never_given_a_value_in_env_example() -> None:
    for line in ENV_EXAMPLE_FILE.read_text().splitlines():
        if re.match(r"# [A-Z0-9_]+(_KEY|_SECRET|_HASH)=", line):
            assert line.endswith("="), line


def test_every_settings_class_in_the_packages_is_in_the_reference() -> None:
    for package in PACKAGES:
        for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found, pending = set(), list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in PACKAGES:
            found.add(cls)
    listed = {cls for _, _, cls in settings_classes()}
    assert found - listed == set(), "add these to settings_reference.settings_classes()"
