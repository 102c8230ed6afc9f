"""The `/auth/v1` HTTP surface (relative to where it is mounted): sign-in, refresh, the signed-in user, sign-out,
sign-up when enabled, the admin users API for the service role, settings and health.

Each endpoint reads top to bottom: who is calling, what they sent, the change in `auth.users`, GoTrue's answer.
The `apikey` rule is applied in front of this app (supabase_local.gateway), as hosted Supabase's gateway does.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supabase_local.auth.config import AuthConfig
from supabase_local.auth.errors import (
    AuthError,
    BadJwt,
    EmailNotConfirmed,
    InvalidCredentials,
    NoAuthorization,
    NotAdmin,
    PhoneProviderDisabled,
    SessionNotFound,
    SignupDisabled,
    TokenUserNotFound,
    UnsupportedGrantType,
    UserAlreadyExists,
    UserNotFound,
    ValidationFailed,
)
from supabase_local.auth.passwords import check_password_rules, hash_password, verify_password
from supabase_local.auth.bodies import (
    AdminUserAttributes,
    AdminUserDelete,
    PasswordGrant,
    RefreshGrant,
    SignUp,
    UserUpdate,
    read_body,
)
from supabase_local.auth.store import AuthStore, IssuedSession, LogoutScope
from supabase_local.auth.tokens import access_token
from supabase_local.auth.users import User, merged_metadata

logger = logging.getLogger("supabase_local.auth")
ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})
LOGOUT_SCOPES: tuple[LogoutScope, ...] = ("global", "local", "others")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000
CORS_HEADERS = ["authorization", "apikey", "content-type", "x-client-info", "x-supabase-api-version"]


class AuthService:
    def __init__(self, config: AuthConfig, store: AuthStore) -> None:
        self.config = config
        self.store = store

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.pool()
        try:
            yield
        finally:
            await self.store.close()

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthError as exc:
                return exc.response(request.headers)
            except Exception:  # noqa: BLE001 - the client gets GoTrue's 500, the log gets the traceback
                logger.exception("unhandled error in %s %s", request.method, request.url.path)
                return AuthError().response(request.headers)
        return answer

    # sessions

    async def token(self, request: Request) -> Response:
        grant_type = request.query_params.get("grant_type")
        if grant_type == "password":
            body = await read_body(request, PasswordGrant)
            if body.email is None:
                if body.phone:
                    raise PhoneProviderDisabled()
                raise ValidationFailed("email: an email (or phone) and a password are required")
            user = await self.store.by_email(body.email)
            # One bcrypt check either way: an unknown email answers as slowly as a wrong password.
            valid = await verify_password(body.password, user.encrypted_password if user else None)
            if user is None or not valid:
                raise InvalidCredentials()
            if user.email_confirmed_at is None:
                raise EmailNotConfirmed()
            return self._session_response(await self.store.start_session(user))
        if grant_type == "refresh_token":
            body_refresh = await read_body(request, RefreshGrant)
            return self._session_response(await self.store.rotate(body_refresh.refresh_token))
        raise UnsupportedGrantType()

    async def logout(self, request: Request) -> Response:
        scope = request.query_params.get("scope", "global")
        if scope not in LOGOUT_SCOPES:
            raise ValidationFailed("scope: must be one of global, local, others")
        user, claims = await self._signed_in(request)
        await self.store.end_sessions(user.id, _session_id(claims), scope)  # type: ignore[arg-type]
        return Response(status_code=204)

    async def signup(self, request: Request) -> Response:
        if not self.config.signup_enabled:
            raise SignupDisabled()
        body = await read_body(request, SignUp)
        if body.email is None:
            raise ValidationFailed("email: required (phone sign-up is not offered)")
        check_password_rules(body.password, self.config.minimum_password_length)
        if await self.store.by_email(body.email) is not None:
            raise UserAlreadyExists()
        # Confirmed at once: nothing is mailed locally, as with `enable_confirmations = false` in the CLI.
        user = await self.store.create(email=body.email, password_hash=await hash_password(body.password),
                                       confirmed=True, user_metadata=body.data or {}, app_metadata={})
        return self._session_response(await self.store.start_session(user))

    # the signed-in user

    async def get_user(self, request: Request) -> Response:
        user, _ = await self._signed_in(request)
        return JSONResponse(user.to_json())

    async def update_user(self, request: Request) -> Response:
        user, _ = await self._signed_in(request)
        body = await read_body(request, UserUpdate)
        password_hash = None
        if body.password is not None:
            check_password_rules(body.password, self.config.minimum_password_length)
            password_hash = await hash_password(body.password)
        updated = await self.store.update(
            user.id, email=body.email, password_hash=password_hash,
            user_metadata=merged_metadata(user.user_metadata, body.data) if body.data is not None else None)
        if updated is None:
            raise UserNotFound()
        return JSONResponse(updated.to_json())

    # admin users API (service role only)

    async def admin_list(self, request: Request) -> Response:
        self._require_admin(request)
        page = _positive_int(request.query_params.get("page"), "page", 1)
        per_page = min(_positive_int(request.query_params.get("per_page"), "per_page", DEFAULT_PER_PAGE),
                       MAX_PER_PAGE)
        users, total = await self.store.page(page, per_page)
        headers = {"X-Total-Count": str(total)}
        last = max(1, -(-total // per_page))
        links = [f'</admin/users?page={page + 1}&per_page={per_page}>; rel="next"'] if page < last else []
        links.append(f'</admin/users?page={last}&per_page={per_page}>; rel="last"')
        headers["Link"] = ", ".join(links)
        return JSONResponse({"users": [user.to_json() for user in users], "aud": "authenticated"}, headers=headers)

    async def admin_create(self, request: Request) -> Response:
        self._require_admin(request)
        body = await read_body(request, AdminUserAttributes)
        if body.email is None:
            raise ValidationFailed("email: required (phone users are not offered)")
        password_hash = None
        if body.password is not None:
            check_password_rules(body.password, self.config.minimum_password_length)
            password_hash = await hash_password(body.password)
        user = await self.store.create(email=body.email, password_hash=password_hash,
                                       confirmed=bool(body.email_confirm), user_metadata=body.user_metadata or {},
                                       app_metadata=body.app_metadata or {})
        return JSONResponse(user.to_json())

    async def admin_get(self, request: Request) -> Response:
        self._require_admin(request)
        return JSONResponse((await self._user_at(request)).to_json())

    async def admin_update(self, request: Request) -> Response:
        self._require_admin(request)
        user = await self._user_at(request)
        body = await read_body(request, AdminUserAttributes)
        password_hash = None
        if body.password is not None:
            check_password_rules(body.password, self.config.minimum_password_length)
            password_hash = await hash_password(body.password)
        updated = await self.store.update(
            user.id, email=body.email, password_hash=password_hash, confirm=body.email_confirm,
            user_metadata=(merged_metadata(user.user_metadata, body.user_metadata)
                           if body.user_metadata is not None else None),
            app_metadata=(merged_metadata(user.app_metadata, body.app_metadata)
                          if body.app_metadata is not None else None))
        if updated is None:
            raise UserNotFound()
        return JSONResponse(updated.to_json())

    async def admin_delete(self, request: Request) -> Response:
        self._require_admin(request)
        user = await self._user_at(request)
        body = await read_body(request, AdminUserDelete, empty_ok=True)
        if body.should_soft_delete:
            raise ValidationFailed("should_soft_delete: soft deletion is not offered locally; delete the user")
        if not await self.store.delete(user.id):
            raise UserNotFound()
        return JSONResponse({})

    # about the service

    async def settings(self, request: Request) -> Response:
        return JSONResponse({
            "external": {"email": True, "phone": False, "anonymous_users": False},
            "disable_signup": not self.config.signup_enabled,
            "mailer_autoconfirm": True,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
        })

    async def health(self, request: Request) -> Response:
        return JSONResponse({"version": "supabase-local", "name": "GoTrue",
                             "description": "GoTrue is a user registration and authentication API"})

    # helpers

    def _session_response(self, issued: IssuedSession) -> JSONResponse:
        access = access_token(issued.user, issued.session_id, issued.signed_in_at, self.config)
        return JSONResponse({
            "access_token": access.token, "token_type": "bearer", "expires_in": access.expires_in,
            "expires_at": access.expires_at, "refresh_token": issued.refresh_token, "user": issued.user.to_json(),
        }, headers={"Cache-Control": "no-store"})

    def _claims(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NoAuthorization()
        try:
            return jwt.decode(token.strip(), self.config.jwt_secret, algorithms=["HS256"],
                              options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise BadJwt("invalid JWT: unable to parse or verify signature, token has invalid claims: "
                         "token is expired") from None
        except jwt.PyJWTError:
            raise BadJwt() from None

    async def _signed_in(self, request: Request) -> tuple[User, dict[str, Any]]:
        claims = self._claims(request)
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError:
            raise BadJwt("invalid claim: missing sub claim") from None
        session_id = _session_id(claims)
        # A signed-out session's access token is refused here, though it stays valid for /rest/v1 until it
        # expires (as with GoTrue and PostgREST).
        if session_id is not None and not await self.store.session_exists(session_id):
            raise SessionNotFound()
        user = await self.store.by_id(user_id)
        if user is None:
            raise TokenUserNotFound()
        return user, claims

    def _require_admin(self, request: Request) -> None:
        if self._claims(request).get("role") not in ADMIN_ROLES:
            raise NotAdmin()

    async def _user_at(self, request: Request) -> User:
        try:
            user_id = uuid.UUID(request.path_params["user_id"])
        except ValueError:
            raise ValidationFailed("user_id: must be a UUID") from None
        user = await self.store.by_id(user_id)
        if user is None:
            raise UserNotFound()
        return user


def _session_id(claims: dict[str, Any]) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(claims["session_id"])) if claims.get("session_id") else None
    except ValueError:
        raise BadJwt("invalid claim: session_id claim must be a UUID") from None


def _positive_int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValidationFailed(f"{name}: must be a positive integer")
    return int(value)


def create_auth_app(config: AuthConfig, database_url: str) -> Starlette:
    """`database_url` logs in as `supabase_auth_admin`; `app.state.auth` is the AuthService."""
    service = AuthService(config, AuthStore(database_url))
    e = service.endpoint
    app = Starlette(
        routes=[
            Route("/token", e(service.token), methods=["POST"]),
            Route("/logout", e(service.logout), methods=["POST"]),
            Route("/signup", e(service.signup), methods=["POST"]),
            Route("/user", e(service.get_user), methods=["GET"]),
            Route("/user", e(service.update_user), methods=["PUT"]),
            Route("/admin/users", e(service.admin_list), methods=["GET"]),
            Route("/admin/users", e(service.admin_create), methods=["POST"]),
            Route("/admin/users/{user_id}", e(service.admin_get), methods=["GET"]),
            Route("/admin/users/{user_id}", e(service.admin_update), methods=["PUT"]),
            Route("/admin/users/{user_id}", e(service.admin_delete), methods=["DELETE"]),
            Route("/settings", e(service.settings), methods=["GET"]),
            Route("/health", e(service.health), methods=["GET"]),
        ],
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "PUT", "DELETE"],
                               allow_headers=CORS_HEADERS,
                               # supabase-js reads the echoed API version to parse error codes.
                               expose_headers=["X-Total-Count", "Link", "X-Supabase-Api-Version"],
                               max_age=86400)],
        lifespan=service.lifespan,
    )
    app.state.auth = service
    return app
