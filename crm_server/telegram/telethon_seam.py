"""Every touch of Telethon's private attributes outside the sandbox: its update queue's read and its message box.

The listener needs both to save only update states whose messages are stored (see `telegram/updates.py`),
`keep_difference_updates` mends Telethon dropping the edits, deletions and reads of a catch-up, and
`on_difference_too_long` tells gap repair when Telethon skips what Telegram no longer keeps.
`check_telethon_shape` fails loudly at start, and in a test, when Telethon no longer has the shape relied on here.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

from telethon import TelegramClient, types
from telethon._updates import messagebox
from telethon._updates.messagebox import MessageBox
from telethon.client import telegrambaseclient, updates


class TelethonShapeError(RuntimeError):
    """Telethon changed under us: this module needs updating (the Telethon pin moved?)."""


def before_each_update_read(client: TelegramClient, hook: Callable[[], None]) -> None:
    """Run `hook` each time the client's update loop asks its queue for more updates.

    At that moment the loop has dispatched everything it took so far, and with `sequential_updates` it has awaited
    every handler: the message box's state then covers exactly the updates handed to us.
    """
    queue = client._updates_queue
    wait_for_updates = queue.get

    def get() -> Any:
        hook()
        return wait_for_updates()

    queue.get = get  # type: ignore[method-assign]


def update_state(client: TelegramClient) -> types.updates.State | None:
    """The client's account-wide update state as Telethon would save it, or None before it has one."""
    box = client._message_box
    if box.is_empty():
        return None
    state, _channels = box.session_state()
    return types.updates.State(**state, unread_count=0)


# Message box (by id) → what to run when its catch-up is answered differenceTooLong; an entry goes with its client.
_too_long_hooks: dict[int, Callable[[], None]] = {}


def on_difference_too_long(client: TelegramClient, hook: Callable[[], None]) -> None:
    """Run `hook` when the client's account-wide catch-up is answered `updates.differenceTooLong`.

    Telethon then adopts the new pts and hands over nothing: whatever happened in between is skipped for good
    (it has no event for it). `hook` is called synchronously inside Telethon's update loop; schedule, never await.
    MessageBox has __slots__, so the class is patched once and finds each box's hook by its id.
    """
    box = client._message_box
    _too_long_hooks[id(box)] = hook
    weakref.finalize(client, _too_long_hooks.pop, id(box), None)
    if getattr(MessageBox.apply_difference, "_crm_tells_too_long", False):
        return
    original = MessageBox.apply_difference

    def apply_difference(self: MessageBox, diff: Any, chat_hashes: Any) -> Any:
        result = original(self, diff, chat_hashes)
        if isinstance(diff, types.updates.DifferenceTooLong):
            told = _too_long_hooks.get(id(self))
            if told is not None:
                told()
        return result

    apply_difference._crm_tells_too_long = True  # type: ignore[attr-defined]
    MessageBox.apply_difference = apply_difference  # type: ignore[method-assign]


def keep_difference_updates() -> None:
    """Make Telethon dispatch the account-wide updates of a getDifference answer's `other_updates`.

    Telethon 1.x feeds them through its socket path while it still marks the account as "getting difference", and
    that path drops every update with a pts then (`apply_pts_info`): the edits, deletions and read receipts made
    while a client was offline were lost, only new messages survived. They are all new (the difference holds what
    came after the client's pts), so they are taken out before Telethon sees them and handed on after the new
    messages, in pts order: a chat's message, then its edit, then its deletion. Idempotent; patches the class.
    """
    if getattr(MessageBox.apply_difference_type, "_crm_keeps_updates", False):
        return
    original = MessageBox.apply_difference_type

    def account_pts(update: Any) -> int | None:
        info = messagebox.PtsInfo.from_update(update)
        return info.pts if info is not None and info.entry == messagebox.ENTRY_ACCOUNT else None

    def apply_difference_type(self: MessageBox, diff: Any, chat_hashes: Any) -> Any:
        others = list(getattr(diff, "other_updates", None) or [])
        kept = [update for update in others if account_pts(update) is not None]
        if kept:
            diff.other_updates = [update for update in others if account_pts(update) is None]
        updates, users, chats = original(self, diff, chat_hashes)
        kept.sort(key=lambda update: account_pts(update) or 0)
        for update in kept:
            update._self_outgoing = False  # read by Telethon's dispatch filter, as for socket updates
        return updates + kept, users, chats

    apply_difference_type._crm_keeps_updates = True  # type: ignore[attr-defined]
    MessageBox.apply_difference_type = apply_difference_type  # type: ignore[method-assign]


def check_telethon_shape() -> None:
    """Raise TelethonShapeError naming what changed if Telethon no longer has the shape used above."""
    problems: list[str] = []
    client_init = _source(telegrambaseclient.TelegramBaseClient.__init__)
    if "self._updates_queue = asyncio.Queue()" not in client_init:
        problems.append("TelegramBaseClient.__init__ no longer makes self._updates_queue an asyncio.Queue")
    if "self._message_box = MessageBox(" not in client_init:
        problems.append("TelegramBaseClient.__init__ no longer makes self._message_box a MessageBox")
    if "self._updates_queue.get()" not in _source(updates.UpdateMethods._update_loop):
        problems.append("UpdateMethods._update_loop no longer reads self._updates_queue.get()")
    if "self._message_box.apply_difference(" not in _source(updates.UpdateMethods._update_loop):
        problems.append("UpdateMethods._update_loop no longer calls self._message_box.apply_difference")
    missing = [name for name in ("is_empty", "session_state", "apply_difference")
               if not callable(getattr(MessageBox, name, None))]
    if missing:
        problems.append(f"MessageBox lost {missing}")
    elif not set(inspect.signature(MessageBox.session_state).parameters) <= {"self"}:
        problems.append("MessageBox.session_state takes arguments now")
    apply = getattr(MessageBox, "apply_difference_type", None)
    if apply is None or list(inspect.signature(apply).parameters) != ["self", "diff", "chat_hashes"]:
        problems.append("MessageBox.apply_difference_type(self, diff, chat_hashes) is gone")
    if not (hasattr(messagebox, "PtsInfo") and hasattr(messagebox, "ENTRY_ACCOUNT")):
        problems.append("telethon._updates.messagebox lost PtsInfo or ENTRY_ACCOUNT")
    if problems:
        raise TelethonShapeError(
            "Telethon's shape changed; crm_server/telegram/telethon_seam.py needs updating: " + "; ".join(problems)
        )


def _source(function: Any) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""
