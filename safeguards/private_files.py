"""State no other user can read: folders made 0700 and files made 0600 from the moment they exist, and a process
umask that gives the same to whatever else creates files (SQLite's journals, libraries).

A file written and then `chmod`-ed is readable by everyone in between (0644 under the usual umask 022); one created
with its mode never is. The SQLite stores hold message texts and phones, the key files what unlocks the rest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def use_private_umask() -> None:
    """From now on this process and its children create files 0600 and folders 0700, whoever creates them."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """`path` made 0700 when missing (its missing parents as the umask says); an existing one is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR_MODE)


def create_private_file(path: Path, content: bytes = b"") -> bool:
    """Create `path` 0600 holding `content`, unless it exists (then it is left alone); True when created now.

    Empty, it readies a file another library will open, such as a SQLite database (SQLite creates its own files
    0644 minus the umask, and gives its -wal and -shm files the mode of the database file).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return True


def write_private_file(path: Path, content: str) -> None:
    """Replace `path` with `content` through a new 0600 file renamed over it: no reader ever sees half of it, and a
    file that was wider (from before) is 0600 afterwards."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def open_private_log(path: Path) -> int:
    """A file descriptor appending to `path`, which is created 0600 when missing (a child's stdout, e.g.)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
