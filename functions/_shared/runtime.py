"""What one functions process shares across requests: settings, the service-role supabase-py client, the HTTP clients,
the token verifier, the integration store and the chat-media bucket. Created once (in the host's lifespan), never per
request.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.requests import Request
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from functions._shared.auth import TokenVerifier
from functions._shared.chat_media import ChatMediaStore
from functions._shared.checked_transport import CheckedTransport, Resolver, resolve_with_system
from functions._shared.crm_client import CrmClient
from functions._shared.integrations import IntegrationStore
from functions._shared.sealed_settings import SettingsSealer
from functions._shared.settings import FunctionsSettings
from functions._shared.rows import TelegramCrmSettings
from functions._shared.replay_cache import ReplayCache
from functions._shared.wappi_client import WappiClient
from safeguards.logs import redact_query_strings


@dataclass
class FunctionsRuntime:
    settings: FunctionsSettings
    db: AsyncClient
    http: httpx.AsyncClient
    rest_http: httpx.AsyncClient
    crm_http: httpx.AsyncClient
    verifier: TokenVerifier
    wappi: WappiClient
    integrations: IntegrationStore
    replays: ReplayCache
    media: ChatMediaStore

    @classmethod
    async def start(cls, settings: FunctionsSettings, *,
                    crm_resolver: Resolver = resolve_with_system) -> FunctionsRuntime:
        """`crm_resolver` is a test seam (names that no DNS has); the host always runs with the system's."""
        # Before the first request: supabase-py finds integrations by `webhook_key=eq.<key>` in the URL httpx logs.
        redact_query_strings()
        # Wappi and the JWKS: addresses from the host's own configuration.
        http = httpx.AsyncClient(timeout=settings.http_timeout_seconds, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        # crm_server: an address a signed-in user gave (crmApiUrl), so only through the checked transport.
        crm_http = httpx.AsyncClient(timeout=settings.http_timeout_seconds, follow_redirects=False,
                                     transport=CheckedTransport(settings.crm_address_policy, resolver=crm_resolver))
        # supabase-py runs its REST calls over a client of its own, apart from the calls to crm_server and Wappi, with
        # a pool about the size of the gateway's database pool: httpcore examines every pooled connection on every
        # request, and with the shared client's pool grown to ~70 that bookkeeping cost more CPU than the webhook.
        # The service role bypasses RLS, so every query of the functions filters by the caller's organization itself.
        rest_http = httpx.AsyncClient(timeout=settings.http_timeout_seconds, follow_redirects=False,
                                      limits=httpx.Limits(max_connections=settings.rest_connections,
                                                          max_keepalive_connections=settings.rest_connections))
        options = AsyncClientOptions(httpx_client=rest_http, auto_refresh_token=False, persist_session=False,
                                     postgrest_client_timeout=settings.http_timeout_seconds)
        db = await acreate_client(settings.supabase_url, settings.supabase_service_role_key, options=options)
        key = settings.settings_key.get_secret_value() if settings.settings_key else None
        return cls(settings=settings, db=db, http=http, rest_http=rest_http, crm_http=crm_http,
                   verifier=TokenVerifier(settings, http),
                   wappi=WappiClient(http, settings.wappi_base_url, timeout=settings.send_timeout_seconds),
                   integrations=IntegrationStore(db, SettingsSealer(key),
                                                settings.webhook_key_cache_seconds),
                   replays=ReplayCache(settings.webhook_tolerance_seconds),
                   media=ChatMediaStore(db, settings.supabase_url, public=settings.media_public))

    def crm(self, integration_settings: TelegramCrmSettings) -> CrmClient:
        return self.crm_at(integration_settings.crmApiUrl, integration_settings.crmApiKey)

    def crm_at(self, base_url: str, api_key: str) -> CrmClient:
        """A crm_server client over `crm_http`: every crm_server call of the functions is made through here."""
        return CrmClient(self.crm_http, base_url, api_key, timeout=self.settings.http_timeout_seconds,
                         send_timeout=self.settings.send_timeout_seconds)

    async def aclose(self) -> None:
        await self.rest_http.aclose()
        await self.crm_http.aclose()
        await self.http.aclose()


def runtime_of(request: Request) -> FunctionsRuntime:
    runtime = request.scope.get("functions_runtime")
    if runtime is None:
        raise RuntimeError("the functions runtime is not started (create_functions_app's lifespan did not run)")
    return runtime
