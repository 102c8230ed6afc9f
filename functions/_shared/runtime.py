"""What one functions process shares across requests: settings, the service-role supabase-py client, the HTTP client,
the token verifier and the integration store. Created once (in the host's lifespan), never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.requests import Request
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from functions._shared.auth import TokenVerifier
from functions._shared.crm_client import CrmClient
from functions._shared.integrations import IntegrationStore
from functions._shared.sealed_settings import SettingsSealer
from functions._shared.settings import FunctionsSettings
from functions._shared.rows import TelegramCrmSettings
from functions._shared.wappi_client import WappiClient
from safeguards.logs import redact_query_strings


@dataclass
class FunctionsRuntime:
    settings: FunctionsSettings
    db: AsyncClient
    http: httpx.AsyncClient
    rest_http: httpx.AsyncClient
    verifier: TokenVerifier
    wappi: WappiClient
    integrations: IntegrationStore

    @classmethod
    async def start(cls, settings: FunctionsSettings) -> FunctionsRuntime:
        # Before the first request: supabase-py finds integrations by `webhook_key=eq.<key>` in the URL httpx logs.
        redact_query_strings()
        http = httpx.AsyncClient(timeout=settings.http_timeout_seconds, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
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
        return cls(settings=settings, db=db, http=http, rest_http=rest_http, verifier=TokenVerifier(settings, http),
                   wappi=WappiClient(http, settings.wappi_base_url, timeout=settings.send_timeout_seconds),
                   integrations=IntegrationStore(db, SettingsSealer(key),
                                                settings.webhook_key_cache_seconds))

    def crm(self, integration_settings: TelegramCrmSettings) -> CrmClient:
        return CrmClient(self.http, integration_settings.crmApiUrl, integration_settings.crmApiKey,
                         timeout=self.settings.http_timeout_seconds, send_timeout=self.settings.send_timeout_seconds)

    async def aclose(self) -> None:
        await self.rest_http.aclose()
        await self.http.aclose()


def runtime_of(request: Request) -> FunctionsRuntime:
    runtime = request.scope.get("functions_runtime")
    if runtime is None:
        raise RuntimeError("the functions runtime is not started (create_functions_app's lifespan did not run)")
    return runtime
