"""The bytes of the simulated Telegram's files and of uploads in progress, as BLOBs in the world's SQLite.
Read and written in pieces through SQLite's incremental BLOB I/O, so memory stays bounded by one chunk or part."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace

from crm_server.sandbox import file_parts
from crm_server.sandbox.errors import RpcFailure
from crm_server.sandbox.media import SimFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    name TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    date INTEGER NOT NULL,
    duration INTEGER,
    width INTEGER,
    height INTEGER,
    title TEXT,
    performer TEXT,
    unavailable INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    key_id INTEGER NOT NULL,
    file_id INTEGER NOT NULL,
    part INTEGER NOT NULL,
    total_parts INTEGER,
    received_at INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS upload_parts_by_file ON upload_parts (key_id, file_id, part);
"""

_FILE_COLUMNS = "id, kind, mime_type, name, size, sha256, date, duration, width, height, title, performer, unavailable"
# Parts of an upload never sent are dropped after a day, as Telegram forgets them.
_UPLOAD_PARTS_TTL_SECONDS = 24 * 3600


class FileStore:
    """Files (photos and documents) by id, and upload parts by (auth key, client file id).

    Shares the world's connection and lock; `write` opens one of the world's write transactions.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock,
                 write: Callable[[], AbstractContextManager[sqlite3.Connection]], secret: bytes) -> None:
        self._db = db
        self._lock = lock
        self._write = write
        self._secret = secret

    # ------------------------------------------------------------ identity Telegram hands out

    def access_hash(self, file_id: int) -> int:
        """The photo/document access hash: derived from the world's secret, so never stored nor guessable."""
        digest = hashlib.blake2b(struct.pack("<q", file_id), key=self._secret, person=b"file-hash",
                                 digest_size=8).digest()
        return struct.unpack("<q", digest)[0]

    def file_reference(self, file_id: int) -> bytes:
        return hashlib.blake2b(struct.pack("<q", file_id), key=self._secret, person=b"file-ref",
                               digest_size=16).digest()

    def check_location(self, file_id: int, access_hash: int, file_reference: bytes) -> SimFile:
        """The file a location names, or what Telegram answers: a wrong id or access hash names no file it
        serves (LOCATION_INVALID), a wrong reference is an expired one (the client refetches the message)."""
        sim = self.get(file_id)
        if sim is None or access_hash != self.access_hash(file_id):
            raise RpcFailure(400, "LOCATION_INVALID")
        if not hmac.compare_digest(file_reference, self.file_reference(file_id)):
            raise RpcFailure(400, "FILE_REFERENCE_EXPIRED")
        if sim.unavailable:
            # The sandbox's "Telegram refuses this file" (incoming media.unavailable): what Telegram answers for
            # a file it no longer has.
            raise RpcFailure(400, "FILE_ID_INVALID")
        return sim

    # ------------------------------------------------------------ stored files

    def store(self, kind: str, data: bytes, *, mime_type: str, name: str | None, date: int,
              duration: int | None = None, width: int | None = None, height: int | None = None,
              title: str | None = None, performer: str | None = None, unavailable: bool = False) -> SimFile:
        sim = SimFile(id=_new_id(), kind=kind, mime_type=mime_type, name=name, size=len(data),
                      sha256=hashlib.sha256(data).hexdigest(), date=date, duration=duration, width=width,
                      height=height, title=title, performer=performer, unavailable=unavailable)
        with self._write() as db:
            db.execute(f"INSERT INTO files ({_FILE_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*_row(sim), data))
        return sim

    def get(self, file_id: int) -> SimFile | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return _file(row) if row else None

    def read(self, file_id: int, offset: int, limit: int) -> bytes:
        """At most `limit` bytes from `offset`; empty past the end, as Telegram answers."""
        with self._lock:
            with self._db.blobopen("files", "data", file_id, readonly=True) as blob:
                if offset >= len(blob):
                    return b""
                blob.seek(offset)
                return blob.read(limit)

    # ------------------------------------------------------------ uploads

    def save_part(self, key_id: int, file_id: int, part: int, data: bytes, total_parts: int | None = None) -> None:
        """One part of an upload (saveFilePart, or saveBigFilePart with `total_parts`); a resent part replaces."""
        file_parts.check_part(part, len(data), total_parts=total_parts)
        now = int(time.time())
        with self._write() as db:
            if total_parts is not None:
                known = db.execute("SELECT total_parts FROM upload_parts WHERE key_id = ? AND file_id = ? LIMIT 1",
                                   (key_id, file_id)).fetchone()
                if known is not None and known[0] != total_parts:
                    raise RpcFailure(400, "FILE_PARTS_INVALID")
            db.execute("DELETE FROM upload_parts WHERE received_at < ?", (now - _UPLOAD_PARTS_TTL_SECONDS,))
            db.execute(
                "INSERT OR REPLACE INTO upload_parts (key_id, file_id, part, total_parts, received_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, file_id, part, total_parts, now, data),
            )

    def discard_upload(self, key_id: int, upload_id: int) -> None:
        """Forget an upload's parts unused (a document's uploaded thumbnail: the sandbox keeps no thumbnails)."""
        with self._write() as db:
            db.execute("DELETE FROM upload_parts WHERE key_id = ? AND file_id = ?", (key_id, upload_id))

    def assemble(self, key_id: int, upload_id: int, parts: int, *, big: bool, md5_checksum: str | None,
                 template: SimFile) -> SimFile:
        """Join an upload's parts into a stored file, checked as Telegram checks them, and forget the parts.

        `template` gives the file's metadata (its id, size and sha256 are set here). Raises RpcFailure
        (FILE_PART_n_MISSING, FILE_PART_SIZE_INVALID, FILE_PARTS_INVALID, MD5_CHECKSUM_INVALID).
        """
        if not 0 < parts <= file_parts.MAX_PARTS:
            raise RpcFailure(400, "FILE_PARTS_INVALID")
        with self._write() as db:
            rows = db.execute(
                "SELECT part, length(data), total_parts, rowid FROM upload_parts WHERE key_id = ? AND file_id = ?"
                " ORDER BY part",
                (key_id, upload_id),
            ).fetchall()
            by_part = {row[0]: row for row in rows}
            if any(part >= parts for part in by_part) or (big and any(row[2] != parts for row in rows)):
                raise RpcFailure(400, "FILE_PARTS_INVALID")
            file_parts.check_assembled([by_part[i][1] if i in by_part else None for i in range(parts)], big=big)
            size = sum(row[1] for row in rows)
            file_id = _new_id()
            described = replace(template, id=file_id, size=size, sha256="")
            sha256 = hashlib.sha256()
            md5 = hashlib.md5()
            db.execute(f"INSERT INTO files ({_FILE_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                       " zeroblob(?))", (*_row(described), size))
            # One part in memory at a time: the parts are copied into the file's BLOB as they are read.
            with db.blobopen("files", "data", file_id) as blob:
                for part in range(parts):
                    with db.blobopen("upload_parts", "data", by_part[part][3], readonly=True) as source:
                        chunk = source.read()
                    blob.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
            if not big and md5_checksum and not hmac.compare_digest(md5_checksum.lower(), md5.hexdigest()):
                raise RpcFailure(400, "MD5_CHECKSUM_INVALID")
            digest = sha256.hexdigest()
            db.execute("UPDATE files SET sha256 = ? WHERE id = ?", (digest, file_id))
            db.execute("DELETE FROM upload_parts WHERE key_id = ? AND file_id = ?", (key_id, upload_id))
        stored = self.get(file_id)
        assert stored is not None
        return stored


def _new_id() -> int:
    # Telegram's photo/document ids are 64-bit; positive and random here, so ids from two worlds never collide.
    return int.from_bytes(os.urandom(8), "big") >> 1 or 1


def _row(sim: SimFile) -> tuple:
    return (sim.id, sim.kind, sim.mime_type, sim.name, sim.size, sim.sha256, sim.date, sim.duration, sim.width,
            sim.height, sim.title, sim.performer, int(sim.unavailable))


def _file(row: tuple) -> SimFile:
    return SimFile(id=row[0], kind=row[1], mime_type=row[2], name=row[3], size=row[4], sha256=row[5], date=row[6],
                   duration=row[7], width=row[8], height=row[9], title=row[10], performer=row[11],
                   unavailable=bool(row[12]))
