"""Prometheus metrics of one crm_server app, on its own registry so several apps in one process do not clash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crm_server.webhooks.posting import DeliveryResult

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sends = Counter(
            "crm_sends_total", "Messages sent through /telegram/send", ["outcome"], registry=self.registry
        )
        self.errors = Counter(
            "crm_errors_total", "Error responses by contract code", ["code"], registry=self.registry
        )
        self.send_seconds = Histogram(
            "crm_send_seconds",
            "Time to send one message, Telegram round trip included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.incoming = Counter(
            "crm_incoming_messages_total", "Incoming private messages written to the outbox", registry=self.registry
        )
        self.deliveries = Counter(
            "crm_webhook_deliveries_total", "Webhook posts by outcome", ["outcome"], registry=self.registry
        )
        self.delivery_seconds = Histogram(
            "crm_webhook_delivery_seconds",
            "Time for one webhook post, receiver included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batches = Counter(
            "crm_webhook_batches_total", "Batched webhook posts (one per POST of several events)",
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "crm_webhook_batch_events",
            "Events per batched webhook post",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
            registry=self.registry,
        )
        self.accounts_connected = Gauge(
            "crm_accounts_connected", "Telegram accounts connected by this server", registry=self.registry
        )

        # Several instances on one store (crm_server.cluster).
        self.accounts_held = Gauge(
            "crm_accounts_held", "Telegram accounts whose lease this instance holds", registry=self.registry
        )
        self.leases = Counter(
            "crm_account_leases_total", "Account leases this instance took, lost to another, or released (fair share)",
            ["event"], registry=self.registry,
        )
        self.forwards = Counter(
            "crm_forwards_total", "Requests forwarded to the instance holding their account", ["route", "outcome"],
            registry=self.registry,
        )

    def watch_connected(self, count: Callable[[], int]) -> None:
        self.accounts_connected.set_function(count)

    def watch_held(self, count: Callable[[], int]) -> None:
        self.accounts_held.set_function(count)

    def observe_lease(self, event: str) -> None:
        self.leases.labels(event).inc()

    def observe_delivery(self, result: DeliveryResult) -> None:
        self.deliveries.labels(result.verdict.value).inc()
        self.delivery_seconds.observe(result.latency)
        if result.batch_events is not None:
            self.batches.inc()
            self.batch_events.observe(result.batch_events)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def count_error(app: Any, code: str) -> None:
    """One error answer of `app` (crm_server's Starlette app) with the contract's `code`; nothing before its
    lifespan made the state (an app answering without one counts nothing)."""
    state = getattr(app.state, "crm", None)
    if state is not None:
        state.metrics.errors.labels(code).inc()
