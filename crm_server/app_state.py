"""What the routes of one crm_server app share, built by the lifespan: settings, store, accounts, keys, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from crm_server.routes.auth import KeyAuthenticator
from crm_server.webhooks.worker import WebhookDelivery
from crm_server.metrics import ServerMetrics
from crm_server.settings import ServerSettings
from crm_server.store import Store
from crm_server.telegram.manager import AccountManager


@dataclass
class AppState:
    settings: ServerSettings
    store: Store
    manager: AccountManager
    authenticator: KeyAuthenticator
    metrics: ServerMetrics
    delivery: WebhookDelivery
    http: httpx.AsyncClient
    # The simulated Telegram (crm_server.sandbox.SandboxWorld) in sandbox mode, else None.
    world: Any = None
