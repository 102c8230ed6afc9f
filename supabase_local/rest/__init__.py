"""A PostgREST-compatible REST gateway over PostgreSQL: what supabase-py emits, with PostgREST's answers.

`create_rest_app(authenticator_dsn, jwt_secret)` builds the app that `supabase_local.api` mounts at `/rest/v1`.
"""

from supabase_local.rest.app import RestGateway, create_rest_app
from supabase_local.rest.errors import RestError

__all__ = ["RestError", "RestGateway", "create_rest_app"]
