"""What the routes of one crm_server app share, built by the lifespan: settings, the services, keys, metrics.

Routes speak to the services here (accounts, webhook registrations, the delivery log, idempotency keys), never to
the store's tables; the store is kept only for the lifespan and housekeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crm_server.cluster.forwarding import Forwarder
from crm_server.cluster.media_relay import RelayedMediaSource
from crm_server.idempotency import IdempotencyKeys
from crm_server.keys import KeyAuthenticator
from crm_server.media.files import MediaFiles
from crm_server.media.outgoing import OutgoingFiles
from crm_server.media.serving import MediaServing
from crm_server.metrics import ServerMetrics
from crm_server.settings import ServerSettings
from crm_server.store import Store
from crm_server.telegram.manager import AccountManager
from crm_server.webhooks.delivery_log import DeliveryLog
from crm_server.webhooks.listener import IncomingListener
from crm_server.webhooks.registrations import WebhookRegistry
from crm_server.outbound_addresses import WebhookPolicy
from crm_server.webhooks.worker import WebhookDelivery


@dataclass
class AppState:
    settings: ServerSettings
    store: Store
    manager: AccountManager
    authenticator: KeyAuthenticator
    metrics: ServerMetrics
    listener: IncomingListener
    delivery: WebhookDelivery
    webhooks: WebhookRegistry
    deliveries: DeliveryLog
    idempotency: IdempotencyKeys
    webhook_policy: WebhookPolicy
    media: MediaServing  # GET /media/{id}
    media_files: MediaFiles  # the folder of incoming files (swept by housekeeping)
    outgoing_files: OutgoingFiles  # file_url of /telegram/send
    forwarder: Forwarder  # requests about accounts another instance holds go there
    media_source: RelayedMediaSource  # incoming files: this instance's clients, else the holder's
    # The simulated Telegram (crm_server.sandbox.SandboxWorld) in sandbox mode, else None.
    world: Any = None
