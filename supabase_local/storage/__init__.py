"""A Supabase Storage-compatible API over PostgreSQL metadata (`storage` schema) and files on disk.

`create_storage_app(authenticator_dsn, jwt_secret, storage_dir)` builds what `supabase_local.api` mounts at
`/storage/v1`.
"""

from supabase_local.storage.app import create_storage_app

__all__ = ["create_storage_app"]
