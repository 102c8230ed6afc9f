"""`HistoryJobsTable`: the history import jobs and their per-dialog progress (last message id handed over).

A job is written after each dialog's chunk is committed to the outbox, so a restart resumes behind what was sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.schema import history_jobs

RUNNING = "running"
DONE = "done"
FAILED = "failed"


@dataclass
class DialogProgress:
    last_id: int = 0  # the newest message id handed over (0: none yet)
    count: int = 0  # messages handed over
    finished: bool = False


@dataclass
class HistoryJob:
    job_id: str
    project_id: str
    phone: str
    per_chat: int
    since: float  # Unix seconds: older messages are not imported
    state: str = RUNNING
    dialogs: int = 0  # dialogs finished
    messages: int = 0  # messages handed to the outbox
    error: str | None = None
    progress: dict[int, DialogProgress] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


def _job(row: object) -> HistoryJob:
    raw = json.loads(row.progress or "{}")  # type: ignore[attr-defined]
    progress = {int(chat): DialogProgress(int(v[0]), int(v[1]), bool(v[2])) for chat, v in raw.items()}
    return HistoryJob(job_id=row.job_id, project_id=row.project_id, phone=row.phone,  # type: ignore[attr-defined]
                      per_chat=row.per_chat, since=row.since, state=row.state,  # type: ignore[attr-defined]
                      dialogs=row.dialogs, messages=row.messages, error=row.error,  # type: ignore[attr-defined]
                      progress=progress, created_at=row.created_at)  # type: ignore[attr-defined]


class HistoryJobsTable:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, job: HistoryJob) -> None:
        now = job.created_at
        async with self._engine.begin() as connection:
            await connection.execute(history_jobs.insert().values(
                job_id=job.job_id, project_id=job.project_id, phone=job.phone, per_chat=job.per_chat,
                since=job.since, state=job.state, dialogs=0, messages=0, progress="{}", created_at=now,
                updated_at=now))

    async def save(self, job: HistoryJob) -> None:
        progress = json.dumps({str(chat): [p.last_id, p.count, p.finished] for chat, p in job.progress.items()})
        async with self._engine.begin() as connection:
            await connection.execute(update(history_jobs).where(history_jobs.c.job_id == job.job_id).values(
                state=job.state, dialogs=job.dialogs, messages=job.messages, error=job.error, progress=progress,
                updated_at=time.time()))

    async def get(self, job_id: str) -> HistoryJob | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(history_jobs).where(history_jobs.c.job_id == job_id))).first()
        return _job(row) if row is not None else None

    async def of_account(self, project_id: str, phone: str) -> list[HistoryJob]:
        """The account's jobs, oldest first."""
        statement = select(history_jobs).where(history_jobs.c.project_id == project_id,
                                               history_jobs.c.phone == phone).order_by(history_jobs.c.created_at)
        async with self._engine.connect() as connection:
            return [_job(row) for row in (await connection.execute(statement)).all()]
