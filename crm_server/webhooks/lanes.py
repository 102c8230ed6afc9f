"""A lane's tenure in the delivery worker (`LaneRun`), and the HTTP clients lanes post through (`LaneClients`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from crm_server.store.outbox import Lane, OutboxRow


@dataclass(eq=False)
class LaneRun:
    """One lane's tenure in this worker."""

    lane: Lane
    rows: deque[OutboxRow] = field(default_factory=deque)  # held (leased to us), not posted yet
    leasing: bool = True  # its first lease is running: rows handed over meanwhile wait in `early`
    early: list[OutboxRow] = field(default_factory=list)
    complete: bool = False  # its lease took every pending row of the chat: newer rows may follow in memory
    open: bool = False  # takes the listener's new rows (complete, and not stopping)
    tainted: bool = False  # a row came it could not take: rows may sit behind ours unleased, never open
    claims: int = 0  # rows claimed for us whose INSERT has not returned yet
    taken: int = 0  # rows held this tenure
    held: set[int] = field(default_factory=set)  # ids of the rows taken this tenure
    closed: bool = False  # gave back what it held: a late hand-over is released, not posted
    halted: bool = False  # its account was paused or disconnected: post nothing more, give the rest back
    lease_until: float = 0.0
    fed: asyncio.Event = field(default_factory=asyncio.Event)

    def next_tenure(self) -> None:
        """Go on as a new tenure (an open run only, past its first lease): its count starts again, and it keeps the
        ids of only the rows it still holds, so a chat that stays busy for days holds no growing set. Only the
        lease's overlap with the rows handed over meanwhile (`early`) needs the ids of rows already taken, and an
        open run is past it."""
        assert self.open and not self.leasing
        self.taken = len(self.rows)
        self.held = {row.id for row in self.rows}


class LaneClients:
    """With a factory, each lane posts through a client of its own (kept for the next lane, connections and all):
    httpx's pool looks at every connection it holds on every request, so one client shared by 32 lanes spent three
    times the CPU per post of a client per lane. Without one, every lane shares `http`."""

    def __init__(self, http: httpx.AsyncClient | None, factory: Callable[[], httpx.AsyncClient] | None) -> None:
        if http is None and factory is None:
            raise ValueError("WebhookDelivery posts through `http` or clients from `client_factory`")
        self._http = http
        self._factory = factory
        self._idle: list[httpx.AsyncClient] = []
        self._made: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        if self._factory is None:
            assert self._http is not None
            return self._http
        if self._idle:
            return self._idle.pop()
        client = self._factory()
        self._made.append(client)
        return client

    def give_back(self, client: httpx.AsyncClient) -> None:
        if self._factory is not None:
            self._idle.append(client)

    async def aclose(self) -> None:
        """Close the clients made here (`http` is its owner's)."""
        made, self._made, self._idle = self._made, [], []
        await asyncio.gather(*(client.aclose() for client in made), return_exceptions=True)
