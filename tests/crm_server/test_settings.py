"""Settings come from the contract's environment names, with defaults under the state folder."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from crm_server.settings import TEST_DC, ServerSettings, load_session_key


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("CRM_", "TGCRM_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_live_under_the_state_dir(tmp_path: Path) -> None:
    settings = ServerSettings(state_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    assert settings.resolved_sandbox_world == tmp_path / "sandbox_world.sqlite3"
    assert (settings.host, settings.port, settings.send_rate_per_minute) == ("127.0.0.1", 8090, 30.0)
    assert settings.public_url == "http://127.0.0.1:8090"


def test_the_contract_environment_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TGCRM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TGCRM_CRM_PORT", "9999")
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+asyncpg://u:p@db/crm")
    monkeypatch.setenv("CRM_SANDBOX", "1")
    monkeypatch.setenv("CRM_ALLOW_PRIVATE_WEBHOOKS", "true")
    monkeypatch.setenv("CRM_SEND_RATE_PER_MINUTE", "12")
    monkeypatch.setenv("TELEGRAM_API_ID", "123")
    monkeypatch.setenv("TELEGRAM_API_HASH", "abc")
    settings = ServerSettings()
    assert settings.state_dir == tmp_path / "state" and settings.port == 9999
    assert settings.resolved_database_url == "postgresql+asyncpg://u:p@db/crm"
    assert settings.sandbox and settings.allow_private_webhooks and settings.send_rate_per_minute == 12
    assert settings.telegram_credentials() == (123, "abc")


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TGCRM_CRM_PORT=7001\nCRM_SEND_BURST=3\n")
    settings = ServerSettings()
    assert (settings.port, settings.send_burst) == (7001, 3)


def test_without_credentials_only_the_sandbox_can_run(tmp_path: Path) -> None:
    assert ServerSettings(sandbox=True).telegram_credentials() == (1, "sandbox")
    with pytest.raises(RuntimeError, match="TELEGRAM_API_ID"):
        ServerSettings(sandbox=False).telegram_credentials()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("test", TEST_DC), ("4:149.154.167.91:443", (4, "149.154.167.91", 443)),
     ("2:[2001:b28:f23d:f001::a]:443", (2, "2001:b28:f23d:f001::a", 443))],
)
def test_telegram_dc_selects_test_dcs_or_a_custom_address(value: str | None, expected: object) -> None:
    assert ServerSettings(telegram_dc=value).telegram_dc_address() == expected


def test_a_malformed_telegram_dc_is_refused() -> None:
    with pytest.raises(ValueError, match="TELEGRAM_DC"):
        ServerSettings(telegram_dc="somewhere").telegram_dc_address()


def test_the_session_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = ServerSettings(state_dir=tmp_path / "state")
    key = load_session_key(settings)
    Fernet(key)
    path = tmp_path / "state" / "crm_session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_session_key(settings) == key


def test_crm_session_key_wins_and_must_be_a_fernet_key(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    assert load_session_key(ServerSettings(state_dir=tmp_path, session_key=key.decode())) == key
    assert not (tmp_path / "crm_session.key").exists()
    with pytest.raises(ValueError):
        load_session_key(ServerSettings(state_dir=tmp_path, session_key="not-a-key"))
