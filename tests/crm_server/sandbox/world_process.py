"""Another process on a sandbox world file, driven one JSON line at a time: what a second crm_server instance's
world does, without the server. `WorldProcess(path).call("incoming", phone, "@alice", "hi")` runs that
SandboxWorld method there; `sign_in`, `check_password` and `qr_scan` run Telethon's real client code and QR
acceptance there.

Run as `python -m tests.crm_server.sandbox.world_process <world file>`; it answers `{"result": …}` or
`{"error": "<class>: <message>"}` per request line and exits at end of input.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from telethon import TelegramClient
from telethon.extensions import BinaryReader
from telethon.sessions import StringSession
from telethon.tl import functions

from crm_server.sandbox import SandboxWorld, install
from crm_server.sandbox import qr_login


class WorldProcess:
    """The test's handle on the other process (started at construction, ended by `close`)."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crm_server.sandbox.world_process", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"method": method, "args": args, "kwargs": kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the world process exited with {self.process.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def _sign_in(world: SandboxWorld, session: str, phone: str, code: str | None = None,
                   phone_code_hash: str | None = None, password: str | None = None) -> dict[str, Any]:
    """A Telethon client of this process on `session` (an auth key made elsewhere) finishes a login."""
    client = TelegramClient(StringSession(session), 1, "x", flood_sleep_threshold=0)
    await client.connect()
    try:
        if password is not None:
            me = await client.sign_in(password=password)
        else:
            me = await client.sign_in(phone, code, phone_code_hash=phone_code_hash)
        return {"user_id": me.id, "session": client.session.save()}
    finally:
        await client.disconnect()


async def _check_password(world: SandboxWorld, session: str, check_hex: str) -> dict[str, Any]:
    """auth.checkPassword with an SRP answer computed elsewhere (for a challenge another process issued)."""
    client = TelegramClient(StringSession(session), 1, "x", flood_sleep_threshold=0)
    await client.connect()
    try:
        check = BinaryReader(bytes.fromhex(check_hex)).tgread_object()
        authorization = await client(functions.auth.CheckPasswordRequest(password=check))
        return {"user_id": authorization.user.id}
    finally:
        await client.disconnect()


def _serve(path: Path) -> None:
    world = SandboxWorld(path)
    install(world)
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        request = json.loads(line)
        method, args, kwargs = request["method"], request["args"], request["kwargs"]
        try:
            if method == "sign_in":
                result: Any = loop.run_until_complete(_sign_in(world, *args, **kwargs))
            elif method == "check_password":
                result = loop.run_until_complete(_check_password(world, *args, **kwargs))
            elif method == "qr_scan":
                result = qr_login.scan(world, *args, **kwargs)
            else:
                result = getattr(world, method)(*args, **kwargs)
            if isinstance(result, list):
                result = [getattr(item, "__dict__", item) if not isinstance(item, dict) else item
                          for item in result]
            answer: dict[str, Any] = {"result": result}
        except Exception as exc:  # reported to the test, which fails with it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer, default=str) + "\n")
        sys.stdout.flush()
    loop.close()
    world.close()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
