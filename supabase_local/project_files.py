"""Where the Supabase project's files are (`config.toml`, `migrations/`, `seed.sql`), for a source checkout and an
installed wheel alike.

In a checkout they are the repository's `supabase/` folder, the one Supabase's CLI reads; a wheel carries a copy of
that folder as package data, `supabase_local/project/`, made at build time by `setup.py` (never edited by hand).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The build copies `supabase/` here; a checkout (or an editable install) has no such folder.
PACKAGED_FOLDER = "project"
CHECKOUT_FOLDER = Path(__file__).resolve().parent.parent / "supabase"


def supabase_dir() -> Path:
    """The folder holding `config.toml`, `migrations/` and `seed.sql`."""
    packaged = resources.files("supabase_local").joinpath(PACKAGED_FOLDER)
    # Installed from a wheel the package lives on disk (pip never installs zipped), so the traversable is a path.
    if packaged.is_dir():
        return Path(str(packaged))
    return CHECKOUT_FOLDER


def migrations_dir() -> Path:
    return supabase_dir() / "migrations"


def seed_file() -> Path:
    return supabase_dir() / "seed.sql"


def config_toml() -> Path:
    return supabase_dir() / "config.toml"
