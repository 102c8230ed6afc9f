"""The local Supabase stack: embedded PostgreSQL, migrations, PostgREST-compatible REST gateway, local JWT keys."""
