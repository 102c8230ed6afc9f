"""`tgcrm cluster --instances k`: k crm_server instances on one PostgreSQL, each answering, one login across them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx

from tests.helpers.announcing_process import AnnouncingProcess

PROJECT = "3c9e2a1b-7d4f-4b6a-8e5c-0000000000d1"


def _two_free_ports() -> int:
    """A port p with p and p + 1 free (the instances take consecutive ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def test_cluster_starts_instances_that_answer_as_one_server_and_stops_on_sigterm(local_database,
                                                                                 tmp_path: Path) -> None:
    port = _two_free_ports()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CRM_", "TGCRM_", "TELEGRAM_"))}
    command = AnnouncingProcess("cluster", ["cluster", "--instances", "2", "--crm-port", str(port),
                                            "--database-url", str(local_database.admin_url),
                                            "--state-dir", str(tmp_path / "state")], cwd=tmp_path, env=env)
    values = command.start(timeout=120)
    try:
        urls = values["CRM_URLS"].split(",")
        assert urls == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        headers = {"X-API-Key": values["CRM_API_KEY"]}
        instance_ids = {httpx.get(f"{url}/health", headers=headers).json()["instance_id"] for url in urls}
        assert len(instance_ids) == 2
        phone = "+15559990001"
        sent = httpx.post(f"{urls[0]}/telegram/auth/send-code", headers=headers,
                          json={"project_id": PROJECT, "phone": phone})
        assert sent.status_code == 200, sent.text
        signed = httpx.post(f"{urls[1]}/telegram/auth/sign-in", headers=headers,
                            json={"project_id": PROJECT, "phone": phone, "code": "12345"})
        assert signed.status_code == 200 and signed.json() == {"status": "authorized"}, signed.text
        assert (tmp_path / "state" / "env").read_text().count("CRM_URLS=") == 1
    finally:
        assert command.stop() == 0, command.log_text()
