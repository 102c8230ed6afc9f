"""Incoming messages under faults: a burst across many chats while the functions process is down, PostgreSQL
restarts, or crm_server is killed — every message the sandbox carried ends up in chat_messages exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.reliability.stack import Account, Burst, ReliabilityStack, incoming_burst

pytestmark = pytest.mark.slow

MESSAGES = 2000
CHATS = 50
# Recovery after the last fault: retries are capped at 1 s, 50 lanes drain in parallel.
SETTLE_SECONDS = 120.0


async def _account_with_chats(stack: ReliabilityStack, chats: int = CHATS) -> tuple[Account, list[str]]:
    tenant = await stack.tenant("Inbound")
    account = await stack.connect_account(tenant)
    senders = await asyncio.gather(*(stack.sandbox_user(first_name=f"Chat{index}") for index in range(chats)))
    return account, [phone for _, phone in senders]


async def _assert_stored_exactly_once(stack: ReliabilityStack, account: Account, burst: Burst) -> None:
    """The world's record of what the account received is the truth; chat_messages must match it one to one."""
    received = stack.world().received(account.phone)
    ours = {text for text in burst.texts}
    carried = [(message_id, text) for message_id, text in received if text in ours]
    # Every text of the burst reached Telegram once (a post lost in a crash was retried only if it had not).
    assert sorted(Counter(text for _, text in carried).values()) == [1] * len(burst.texts)
    stored_count = await stack.wait_for_incoming(account.tenant.organization_id, len(carried), SETTLE_SECONDS)
    rows = await stack.incoming_rows(account.tenant.organization_id)
    assert stored_count == len(rows)
    stored = Counter((row["external_message_id"], row["message_text"]) for row in rows)
    duplicates = [key for key, times in stored.items() if times > 1]
    assert not duplicates, f"stored more than once: {duplicates[:5]}"
    expected = {(str(message_id), text) for message_id, text in carried}
    missing = expected - set(stored)
    assert not missing, f"{len(missing)} of {len(expected)} never stored, e.g. {sorted(missing)[:3]}"
    assert set(stored) == expected
    assert len(rows) == len(burst.texts)


async def test_a_burst_while_the_functions_process_is_down_for_20_seconds_is_stored_exactly_once(
        stack: ReliabilityStack) -> None:
    account, senders = await _account_with_chats(stack)
    down_for = 20.0
    outage: list[float] = []

    async def stop_functions(posted: int) -> None:
        await asyncio.to_thread(stack.api.stop)
        outage.append(time.monotonic())

    async def start_functions_later() -> None:
        while not outage:
            await asyncio.sleep(0.05)
        # The burst goes on while the receiver is away: crm_server's outbox holds it.
        await asyncio.sleep(down_for - (time.monotonic() - outage[0]))
        await asyncio.to_thread(stack.api.start)

    retries_before = await stack.failed_deliveries()
    restarter = asyncio.create_task(start_functions_later())
    burst = await incoming_burst(stack, account, senders, MESSAGES, tag="functions-down", on_progress=stop_functions,
                                 progress_marks=[MESSAGES // 4])
    await restarter
    await _assert_stored_exactly_once(stack, account, burst)
    assert await stack.failed_deliveries() > retries_before, "no delivery ever failed: the outage did not bite"


async def test_a_burst_while_postgresql_restarts_is_stored_exactly_once(stack: ReliabilityStack) -> None:
    account, senders = await _account_with_chats(stack)
    server = stack.database.server
    assert server is not None

    async def restart_postgres(posted: int) -> None:
        await asyncio.to_thread(server.stop)
        # Down long enough for many webhooks to fail and be retried, then back on the same port and data.
        await asyncio.sleep(3.0)
        await asyncio.to_thread(server.start)

    # The posts go on while PostgreSQL is away: the fault runs beside the burst, not inside it.
    faults: list[asyncio.Task[None]] = []

    async def fault(posted: int) -> None:
        faults.append(asyncio.create_task(restart_postgres(posted)))

    retries_before = await stack.failed_deliveries()
    burst = await incoming_burst(stack, account, senders, MESSAGES, tag="postgres-restart", on_progress=fault,
                                 progress_marks=[MESSAGES // 3])
    await asyncio.gather(*faults)
    await _assert_stored_exactly_once(stack, account, burst)
    assert await stack.failed_deliveries() > retries_before, "no webhook ever failed: the restart did not bite"


async def test_a_burst_with_crm_server_killed_twice_is_stored_exactly_once(stack: ReliabilityStack) -> None:
    account, senders = await _account_with_chats(stack)

    pending_at_kill: list[int] = []

    async def kill_and_restart(posted: int) -> None:
        pending_at_kill.append(await stack.outbox_pending())
        stack.crm.kill()
        await asyncio.to_thread(stack.crm.start)

    starts = stack.crm.starts
    burst = await incoming_burst(stack, account, senders, MESSAGES, tag="crm-killed", on_progress=kill_and_restart,
                                 progress_marks=[MESSAGES // 4, (MESSAGES * 3) // 5])
    assert stack.crm.starts == starts + 2
    # Killed with deliveries in flight: what it had posted but not yet marked is posted again after the restart.
    assert any(pending_at_kill), pending_at_kill
    await _assert_stored_exactly_once(stack, account, burst)
