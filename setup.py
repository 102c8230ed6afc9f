"""Build step the declarative pyproject.toml cannot say: the wheel carries `supabase/` as package data.

`supabase/` stays at the repository's root (Supabase's CLI expects it there); the build copies it into
`supabase_local/project/`, where `supabase_local.project_files` finds it in an installed wheel.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithSupabaseProject(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "supabase"
        target = Path(self.build_lib) / "supabase_local" / "project"
        shutil.rmtree(target, ignore_errors=True)
        # Only what the runtime reads: the CLI's own scratch folders (.temp, .branches) stay out.
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithSupabaseProject})
