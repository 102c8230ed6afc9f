"""The distribution as a newcomer gets it: the wheel built from this checkout, installed into a fresh venv, runs
`tgcrm up` from an empty folder (migrations, config.toml, seed and admin page all come from the wheel).

Offline: the wheel is built with this venv's setuptools, and the fresh venv finds the dependencies (never this
project) in this venv's site-packages through a .pth line, so nothing is downloaded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack_process import StackProcess

REPOSITORY = Path(__file__).resolve().parents[2]


class InstalledStack(StackProcess):
    """`tgcrm up` by the installed console script, from `folder`, with no --state-dir: state goes to ./.local."""

    def __init__(self, folder: Path, script: Path) -> None:
        super().__init__(folder / ".local", name="installed")
        self.script = script

    def command(self, *extra: str) -> list[str]:
        return [str(self.script), "up", "--api-port", str(self.api_port), "--crm-port", str(self.crm_port),
                "--db-port", str(self.db_port), *extra]


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its `bin/`."""
    root = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", root / "dist",
        REPOSITORY)
    (wheel,) = (root / "dist").glob("telegram_crm-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    # Dependencies only: a plain path line does not run this venv's .pth files, so its editable install of this
    # project (a finder hook) stays out, and the wheel's copy is the only one the fresh venv can import.
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site_packages / "_dependencies.pth").write_text("".join(f"{path}\n" for path in paths))
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-deps",
        "--no-index", "--ignore-installed", wheel)
    return venv / "bin"


def test_the_installed_package_is_the_wheels_own_copy(installed: Path, tmp_path: Path) -> None:
    where = run(installed / "python", "-c",
                "import supabase_local.project_files as f, tgcrm; print(tgcrm.__file__); print(f.supabase_dir())",
                cwd=tmp_path).split()
    venv = installed.parent
    assert all(Path(path).is_relative_to(venv) for path in where), where
    assert (Path(where[1]) / "config.toml").is_file()
    assert sorted(path.name for path in (Path(where[1]) / "migrations").glob("*.sql")) == sorted(
        path.name for path in (REPOSITORY / "supabase" / "migrations").glob("*.sql"))


def test_version_is_the_distributions(installed: Path, tmp_path: Path) -> None:
    assert run(installed / "tgcrm", "--version", cwd=tmp_path).strip() == "tgcrm 0.1.0"


def test_up_from_an_empty_folder_serves_the_admin_page_and_stops_on_ctrl_c(installed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    stack = InstalledStack(folder, installed / "tgcrm")
    try:
        values = stack.start()
        assert (folder / ".local" / "env").is_file()  # state went to ./.local of the folder it ran in
        page = httpx.get(f"{values['SUPABASE_URL']}/admin/", timeout=30)
        assert page.status_code == 200, page.text
        assert "<html" in page.text.lower()
        clients = httpx.get(f"{values['SUPABASE_URL']}/rest/v1/clients?select=id",
                            headers={"apikey": values["SUPABASE_ANON_KEY"],
                                     "Authorization": f"Bearer {values['DEMO_USER_JWT']}"}, timeout=30)
        assert clients.status_code == 200 and len(clients.json()) >= 2  # the wheel's seed was applied
        for path in ("/docs", "/docs/assets/swagger-init.js", "/docs/assets/swagger-ui-bundle.js"):
            assert httpx.get(f"{values['CRM_URL']}{path}", timeout=30).status_code == 200, path  # api_docs' files
        children = stack.descendants()
    finally:
        code = stack.stop(signal.SIGINT)
    assert code == 0, stack.log_text()
    assert not [child for child in children if child.is_running() and child.status() != "zombie"]
