"""The persistent state of crm_server: API keys, accounts with their encrypted sessions, webhooks, idempotency records.

SQLAlchemy Core on an async engine; SQLite by default, PostgreSQL when CRM_DATABASE_URL says so.
"""

from crm_server.store.accounts import AccountRecord
from crm_server.store.database import Store
from crm_server.store.idempotency import IdempotencyClaim
from crm_server.store.schema import OutboxState, StoredStatus
from crm_server.store.webhooks import WebhookRecord

__all__ = [
    "AccountRecord",
    "IdempotencyClaim",
    "OutboxState",
    "Store",
    "StoredStatus",
    "WebhookRecord",
]
