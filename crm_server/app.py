"""The crm_server application assembled in one visible place: routes, error handlers and the lifespan.

The lifespan opens the store, installs the Telegram sandbox when asked, and starts and stops the AccountManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import certifi
import httpx

from api_docs.swagger_page import DocsPage
from crm_server import errors
from crm_server.app_state import AppState
from crm_server.cluster.forwarding import Forwarder
from crm_server.cluster.media_relay import RELAY_PATH, RelayedMediaSource
from crm_server.routes.cluster_media import relay_media
from crm_server.idempotency import IdempotencyKeys
from crm_server.keys import KeyAuthenticator
from crm_server.media.files import MediaFiles
from crm_server.media.links import MediaLinks, link_key
from crm_server.media.outgoing import OutgoingFiles
from crm_server.media.serving import MediaServing
from crm_server.metrics import ServerMetrics, count_error
from crm_server.routes import api, deliveries, media, sandbox_control
from crm_server.routes.auth import authenticate
from crm_server.routes.openapi import build_openapi
from crm_server.settings import ServerSettings, load_session_key
from crm_server.store import Store
from crm_server.telegram.manager import AccountManager
from crm_server.telegram.media_download import TelegramMediaSource
from crm_server.telegram.updates import RecentMessages
from crm_server.unexpected_errors import UnexpectedErrors
from crm_server.webhooks.delivery_log import DeliveryLog
from crm_server.webhooks.listener import IncomingListener
from crm_server.webhooks.media_payload import MediaPreparer
from crm_server.webhooks.policy import RetrySchedule
from crm_server.webhooks.registrations import WebhookRegistry
from crm_server.webhooks.subscriptions import Subscriptions
from crm_server.outbound_addresses import DeliveryTargets, WebhookPolicy
from crm_server.webhooks.worker import DeliverySettings, WebhookDelivery
from safeguards import logs
from safeguards.private_files import make_private_dir

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 3600
# How long the chat of a delivered or sent message is remembered (a later deletion of it is sent with its chat;
# after that, `chat_id: null`), and a catch-up still recognises our own sends.
KNOWN_MESSAGES_DAYS = 90
STOP_DRAIN_SECONDS = 10.0  # at shutdown, how long buffered incoming messages may take to reach the outbox


def create_app(settings: ServerSettings) -> Starlette:
    routes = [
        Route("/integration/lovable/connect", api.connect, methods=["POST"]),
        Route("/integration/lovable/pause", api.pause, methods=["POST"]),
        Route("/integration/lovable/disconnect", api.disconnect, methods=["POST"]),
        Route("/telegram/send", api.send, methods=["POST"]),
        Route("/telegram/read", api.read, methods=["POST"]),
        Route("/telegram/history/import", api.import_history, methods=["POST"]),
        Route("/telegram/history/import/{job_id}", api.history_job, methods=["GET"]),
        Route("/telegram/status", api.status, methods=["GET"]),
        Route("/telegram/auth/send-code", api.send_code, methods=["POST"]),
        Route("/telegram/auth/sign-in", api.sign_in, methods=["POST"]),
        Route("/telegram/auth/password", api.password, methods=["POST"]),
        Route("/telegram/auth/qr", api.start_qr_login, methods=["POST"]),
        Route("/telegram/auth/qr", api.qr_login_status, methods=["GET"]),
        Route("/telegram/accounts/{phone}", api.logout, methods=["DELETE"]),
        Route("/webhooks/deliveries", deliveries.list_deliveries, methods=["GET"]),
        Route("/webhooks/deliveries/{id}/retry", deliveries.retry_delivery, methods=["POST"]),
        Route("/media/{id}", media.media_file, methods=["GET"]),
        Route(RELAY_PATH, relay_media, methods=["POST"]),  # between instances only (signed)
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        # Swagger UI: the page opens without a key and asks for it; the description it then loads needs the key.
        *DocsPage(title="crm_server API", key_header="X-API-Key", key_scheme="ApiKey").routes("/docs"),
    ]
    if settings.sandbox:
        routes += sandbox_control.routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = await start_state(settings)
        app.state.crm = state
        purge = asyncio.create_task(_housekeeping(state))
        try:
            yield
        finally:
            purge.cancel()
            await stop_state(state)

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            errors.CrmError: crm_error_handler,
            HTTPException: http_error_handler,
        },
        middleware=[Middleware(UnexpectedErrors)],
    )


async def start_state(settings: ServerSettings) -> AppState:
    # Before the first webhook post (its URL carries the webhook key) and the first statement (parameters).
    logs.redact_query_strings()
    if not settings.log_payloads:
        logs.keep_payloads_out()
    make_private_dir(settings.state_dir)
    session_key = load_session_key(settings)
    # This process's id among the instances sharing the store: its lease owner id, the media rows' holder.
    instance_id = f"crm-{uuid.uuid4().hex[:16]}"
    store = await Store.open(settings.resolved_database_url, session_key, instance_id, background_checkpoints=True)
    world = None
    if settings.sandbox:
        from crm_server.sandbox import SandboxWorld, install

        world = SandboxWorld(settings.resolved_sandbox_world)
        from crm_server.sandbox.qr_login import tokens_of

        tokens_of(world).token_seconds = settings.sandbox_qr_token_seconds
        # Before any TelegramClient is built: clients pick their sender class at construction.
        install(world)
    metrics = ServerMetrics()

    # Built once: loading the CA bundle costs ~15 ms of CPU, and every lane client would do it again.
    tls = ssl.create_default_context(cafile=certifi.where())

    def lane_client() -> httpx.AsyncClient:
        # One per concurrent lane (see WebhookDelivery): two connections, one kept alive between lanes. Idle ones
        # retire after 4 s, before the 5 s idle timeout of common receivers (uvicorn, Node.js): reusing one just as
        # the receiver closes it fails the post (httpx.ReadError) and costs the lane a retry.
        return httpx.AsyncClient(timeout=httpx.Timeout(settings.webhook_timeout_seconds),
                                 limits=httpx.Limits(max_connections=2, max_keepalive_connections=1,
                                                     keepalive_expiry=4.0),
                                 follow_redirects=False, verify=tls)

    policy = WebhookPolicy.from_setting(settings.allow_private_webhooks, settings.private_webhook_hosts)

    # Media: the Telegram wing downloads (through the manager's live clients, built below), the webhook wing asks.
    links = MediaLinks(link_key(session_key), settings.media_base_url, settings.media_url_ttl_seconds)
    media_files = MediaFiles(settings.media_dir, store.media, max_disk_bytes=settings.media_max_disk_bytes,
                             retention_seconds=settings.media_retention_hours * 3600)
    recent_messages = RecentMessages()
    source = TelegramMediaSource(recent_messages)
    # Through this instance's live clients, else the account's holder (several instances on one store).
    relayed = RelayedMediaSource(source)
    preparer = MediaPreparer(relayed, store.media, media_files, links, max_bytes=settings.media_max_bytes)
    media_policy = WebhookPolicy.from_setting(settings.allow_private_media, settings.private_media_hosts)

    def media_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False, verify=tls)

    outgoing_files = OutgoingFiles(settings.media_dir / "outgoing", DeliveryTargets(media_policy),
                                   max_bytes=settings.media_max_bytes, client=media_client)
    delivery = WebhookDelivery(
        store.outbox,
        store.webhooks,
        http=None,
        schedule=RetrySchedule(
            first_delay=settings.webhook_retry_first_seconds,
            max_delay=settings.webhook_retry_max_seconds,
            window=settings.webhook_retry_window_seconds,
        ),
        settings=DeliverySettings(concurrency=settings.webhook_concurrency,
                                  lease_seconds=settings.webhook_lease_seconds,
                                  batch_max_bytes=settings.webhook_batch_max_bytes),
        observers=[metrics.observe_delivery],
        client_factory=lane_client,
        targets=DeliveryTargets(policy),
        media=preparer,
    )
    subscriptions = Subscriptions(store.webhooks)
    listener = IncomingListener(store.outbox, delivery, on_enqueued=lambda added: metrics.incoming.inc(added),
                                subscriptions=subscriptions)
    manager = AccountManager(store, settings, incoming=listener, recent_messages=recent_messages,
                             on_lease=metrics.observe_lease)
    source.serve_from(manager.media_client)
    metrics.watch_connected(manager.connected_count)
    metrics.watch_held(manager.held_count)
    forwarder = Forwarder(store, instance_id=manager.owner_id, secret=settings.cluster_secret,
                          runs_here=manager.runs_here, metrics=metrics)
    relayed.relay_through(forwarder, manager.runs_here)
    await delivery.start()
    await manager.start()
    return AppState(
        settings=settings,
        store=store,
        manager=manager,
        authenticator=KeyAuthenticator(store.api_keys),
        metrics=metrics,
        listener=listener,
        delivery=delivery,
        webhooks=WebhookRegistry(store.webhooks, store.outbox, delivery, subscriptions),
        deliveries=DeliveryLog(store.outbox, on_retry=delivery.wake),
        idempotency=IdempotencyKeys(store.idempotency),
        webhook_policy=policy,
        media=MediaServing(store.media, links, instance_id),
        media_files=media_files,
        outgoing_files=outgoing_files,
        forwarder=forwarder,
        media_source=relayed,
        world=world,
    )


async def stop_state(state: AppState) -> None:
    # Accounts first: no new message is enqueued once the worker stops.
    await state.manager.stop()
    # What the listener still buffers goes to the outbox now; if the store is down it is fetched again at the
    # next start (the saved update state is behind it).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.listener.drain(), STOP_DRAIN_SECONDS)
    await state.delivery.stop()
    await state.forwarder.close()
    await state.store.close()
    if state.world is not None:
        from crm_server.sandbox import uninstall

        uninstall()
        state.world.close()


async def _housekeeping(state: AppState) -> None:
    """Hourly: expired idempotency records, old delivered outbox rows and media files past their retention go."""
    while True:
        try:
            await state.store.idempotency.purge_expired()
            # Files first: the sweep reads when their events were delivered from the outbox rows.
            await state.media_files.sweep(time.time())
            await state.store.outbox.purge_delivered(time.time() - state.settings.webhook_keep_delivered_seconds)
            await state.store.known_messages.purge(time.time() - KNOWN_MESSAGES_DAYS * 86400)
            await state.store.pending_logins.purge_expired()
            await state.store.qr_logins.purge_expired()
            await state.store.instances.forget_silent(time.time() - 86400)
        except Exception as exc:
            log.warning("housekeeping failed (%s)", type(exc).__name__)
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


@functools.lru_cache(maxsize=16)
def _openapi_json(sandbox: bool, server_url: str) -> bytes:
    # Building the description from the models takes ~20 ms of CPU; it never changes while the process runs (one
    # copy per address it is called by: a proxy's public name and a local one).
    return json.dumps({**build_openapi(sandbox=sandbox), "servers": [{"url": server_url}]}).encode()


async def openapi_json(request: Request) -> Response:
    state: AppState = request.app.state.crm
    await authenticate(request)
    # Where "Try it out" and generated clients send requests: the address this request came to, which behind a
    # trusted proxy (CRM_TRUSTED_PROXIES) has the proxy's scheme, so an https page does not call http.
    server_url = str(request.base_url).rstrip("/")
    return Response(_openapi_json(state.settings.sandbox, server_url), media_type="application/json")


async def crm_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.CrmError)
    count_error(request.app, exc.code)
    return errors.error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: errors.CrmError
    if exc.status_code == 404:
        error = errors.RouteNotFoundError()
    elif exc.status_code == 405:
        error = errors.MethodNotAllowedError()
    else:
        error = errors.CrmError(str(exc.detail))
        error.status_code = exc.status_code
    count_error(request.app, error.code)
    return errors.error_response(error)

