"""The local Supabase Auth (GoTrue) subset that supabase-py and supabase-js call, served at `/auth/v1`.

`create_auth_app(config, database_url)` builds it (supabase_local.auth.app); users live in PostgreSQL `auth.users`.
"""
