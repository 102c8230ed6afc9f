"""The configuration reference: every setting of every service, generated from the pydantic settings classes (their
field docstrings are the purposes) into docs/configuration.md and .env.example.

`python -m tgcrm.settings_reference` rewrites both; `--check` only compares them (tests/tgcrm/test_settings_reference.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

REPOSITORY = Path(__file__).resolve().parent.parent
DOCS_FILE = REPOSITORY / "docs" / "configuration.md"
ENV_EXAMPLE_FILE = REPOSITORY / ".env.example"
REGENERATE = "python -m tgcrm.settings_reference"


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str  # as the docs show it; "" for none, "required" for a setting without default
    purpose: str
    secret: bool


@dataclass(frozen=True)
class Section:
    title: str
    who_reads_it: str
    settings: tuple[Setting, ...]


def settings_classes() -> list[tuple[str, str, type[BaseSettings]]]:
    """(title, who reads it, class) for every settings class; a new class must be added here (the test says so)."""
    from crm_server.settings import ServerSettings
    from functions._shared.settings import FunctionsSettings
    from functions.cli import FunctionsCommandSettings
    from tgcrm.api_process import ApiProcessSettings
    from tgcrm.command_line_settings import CommandLineSettings

    return [
        ("crm_server", "`tgcrm server`, `python -m crm_server`, and crm_server under `tgcrm up`; also read from `.env` "
                       "in the current folder.", ServerSettings),
        ("Functions host", "`tgcrm functions`, and the API process of `tgcrm up` (which sets the local ones); also "
                           "read from `.env` in the current folder.", FunctionsSettings),
        ("`tgcrm functions` options", "The defaults of `tgcrm functions`' flags.", FunctionsCommandSettings),
        ("`tgcrm` command line", "The defaults of the flags of `tgcrm up`, `db up`, `db migrate` and `token`.",
         CommandLineSettings),
        ("API process of `tgcrm up`", "Set by `tgcrm up` for the process serving /rest/v1, /functions/v1 and "
                                      "/admin; listed for completeness, not meant to be set by hand.",
         ApiProcessSettings),
    ]


def environment_variable(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    return str(alias or field.alias or name).upper()


def shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def purpose(field: FieldInfo) -> str:
    return " ".join((field.description or "").split())


def is_secret(field: FieldInfo, variable: str) -> bool:
    return field.annotation in (SecretStr, SecretStr | None) or variable.endswith(("_KEY", "_SECRET", "_HASH"))


def restart_settings() -> Section:
    """The supervisor's knobs are read by RestartPolicy itself (with its own messages), not a settings class."""
    from tgcrm.stack import RESTART_DELAY_VARIABLES, RestartPolicy

    return Section("`tgcrm up` supervisor", "How soon `tgcrm up` restarts a service that died.", tuple(
        Setting(name, shown_default_number(getattr(RestartPolicy, attribute)), text, secret=False)
        for name, attribute, text in RESTART_DELAY_VARIABLES))


def shown_default_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def sections() -> list[Section]:
    found = []
    for title, who, cls in settings_classes():
        rows = []
        for name, field in cls.model_fields.items():
            variable = environment_variable(name, field)
            rows.append(Setting(variable, shown_default(field), purpose(field), is_secret(field, variable)))
        found.append(Section(title, who, tuple(rows)))
    found.append(restart_settings())
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(all_sections: Sequence[Section]) -> str:
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the settings classes by `{REGENERATE}`: do not edit by hand, a test",
        "compares it with the code. Every setting is an environment variable; crm_server and the functions host",
        "also read a `.env` file in the current folder. `.env.example` lists the same settings. Empty default:",
        "unset.",
        "",
    ]
    for section in all_sections:
        lines += [f"## {section.title}", "", section.who_reads_it, "", "| variable | default | purpose |",
                  "|---|---|---|"]
        for setting in section.settings:
            default = f"`{_cell(setting.default)}`" if setting.default and setting.default != "required" \
                else setting.default
            lines.append(f"| `{setting.variable}` | {default} | {_cell(setting.purpose)} |")
        lines.append("")
    return "\n".join(lines)


def render_env_example(all_sections: Sequence[Section]) -> str:
    lines = [f"# Every setting, commented out at its default (generated by `{REGENERATE}`; see",
             "# docs/configuration.md). Copy to .env and uncomment what you set.", ""]
    seen: set[str] = set()
    for section in all_sections:
        lines.append(f"# --- {section.title.replace('`', '')}")
        for setting in section.settings:
            if setting.variable in seen:  # one variable read by two services is set once
                lines.append(f"# {setting.variable}: see above")
                continue
            seen.add(setting.variable)
            lines.append(f"# {setting.purpose}")
            value = "" if setting.secret or setting.default == "required" else setting.default
            lines.append(f"# {setting.variable}={value}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say whether the files are up to date")
    args = parser.parse_args(argv)
    all_sections = sections()
    outputs = {DOCS_FILE: render_markdown(all_sections), ENV_EXAMPLE_FILE: render_env_example(all_sections)}
    stale = [path for path, text in outputs.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPOSITORY)} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs[path])
        print(f"wrote {path.relative_to(REPOSITORY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
