"""Telegram's rules for moving a file in pieces (core.telegram.org/api/files): which upload.getFile ranges and which
upload part sizes it accepts, and the RPC error it answers otherwise. Pure checks; the bytes live in files.py."""

from __future__ import annotations

from crm_server.sandbox.errors import RpcFailure

KIB = 1024
MIB = 1024 * KIB
# upload.getFile: at most 1 MiB per request; a request never crosses a 1 MiB boundary of the file.
MAX_DOWNLOAD_LIMIT = MIB
# upload.saveFilePart / saveBigFilePart: parts of at most 512 KiB that divide 512 KiB, so they tile it exactly.
MAX_PART_SIZE = 512 * KIB
MAX_PARTS = 4000
# Files above 10 MiB must be uploaded with saveBigFilePart (and are then sent as InputFileBig).
BIG_FILE_THRESHOLD = 10 * MIB


def check_download_range(offset: int, limit: int, *, precise: bool) -> None:
    """Raise what Telegram answers for a getFile range it refuses.

    Without `precise`: offset and limit divisible by 4 KiB, and 1 MiB divisible by limit (so chunks tile each
    MiB). With `precise`: 1 KiB granularity and any limit up to 1 MiB. Either way a range stays within one MiB.
    """
    unit = KIB if precise else 4 * KIB
    if limit <= 0 or limit > MAX_DOWNLOAD_LIMIT or limit % unit:
        raise RpcFailure(400, "LIMIT_INVALID")
    if not precise and MIB % limit:
        raise RpcFailure(400, "LIMIT_INVALID")
    if offset < 0 or offset % unit:
        raise RpcFailure(400, "OFFSET_INVALID")
    if offset // MIB != (offset + limit - 1) // MIB:
        raise RpcFailure(400, "LIMIT_INVALID")


def check_part(part: int, size: int, *, total_parts: int | None = None) -> None:
    """Raise what Telegram answers for an upload part it refuses. The size rule cannot apply to the last part
    (it may be shorter); `assemble_sizes` checks that once the number of parts is known."""
    if part < 0 or part >= MAX_PARTS or (total_parts is not None and part >= total_parts):
        raise RpcFailure(400, "FILE_PART_INVALID")
    if total_parts is not None and not 0 < total_parts <= MAX_PARTS:
        raise RpcFailure(400, "FILE_PARTS_INVALID")
    if size <= 0 or size > MAX_PART_SIZE:
        raise RpcFailure(400, "FILE_PART_SIZE_INVALID")


def check_assembled(sizes: list[int | None], *, big: bool) -> None:
    """`sizes[i]` is part i's length (None: never received). Every part but the last has one size that tiles
    512 KiB (divisible by 1 KiB, 524288 % size == 0); the last is no longer than the others."""
    for index, size in enumerate(sizes):
        if size is None:
            raise RpcFailure(400, f"FILE_PART_{index}_MISSING")
    if not sizes:
        raise RpcFailure(400, "FILE_PARTS_INVALID")
    if len(sizes) > 1:
        part_size = sizes[0]
        assert part_size is not None
        if part_size % KIB or MAX_PART_SIZE % part_size or any(s != part_size for s in sizes[:-1]):
            raise RpcFailure(400, "FILE_PART_SIZE_INVALID")
        if sizes[-1] > part_size:  # type: ignore[operator]
            raise RpcFailure(400, "FILE_PART_SIZE_INVALID")
    total = sum(s for s in sizes if s is not None)
    if not big and total > BIG_FILE_THRESHOLD:
        # Telegram wants files this large as big files (saveBigFilePart + InputFileBig).
        raise RpcFailure(400, "FILE_PARTS_INVALID")
