"""Turns world records into the Telethon TL objects a given viewer (account) would receive from Telegram.
Everything TL-shaped that the sandbox answers or pushes is built here, so per-viewer rules live in one place."""

from __future__ import annotations

import hashlib
import mimetypes
import struct
from datetime import datetime, timezone

from telethon.tl import types

from crm_server.sandbox.media import SimFile, document_attributes
from crm_server.sandbox.world import (
    DELETE,
    EDIT,
    READ_INBOX,
    READ_OUTBOX,
    SERVICE_USER_ID,
    SandboxWorld,
    SimMedia,
    SimMessage,
    SimUpdate,
    SimUser,
)

# Telegram answers BoolTrue/BoolFalse and vectors with these bare constructors.
BOOL_TRUE = struct.pack("<I", 0x997275B5)
BOOL_FALSE = struct.pack("<I", 0xBC799737)
VECTOR = struct.pack("<I", 0x1CB5C415)


def result_bytes(result: object) -> bytes:
    """Serialise an answer the way the wire carries it: TL objects, Bool, or a vector of TL objects."""
    if result is True:
        return BOOL_TRUE
    if result is False:
        return BOOL_FALSE
    if isinstance(result, list):
        return VECTOR + struct.pack("<i", len(result)) + b"".join(bytes(item) for item in result)
    return bytes(result)  # type: ignore[call-overload]


def user(world: SandboxWorld, viewer_id: int, sim: SimUser, *, contact: bool | None = None) -> types.User:
    """`sim` as `viewer_id` sees it: its own access hash, `is_self`, and the phone only when visible.

    The phone is shown to the user itself, to contacts, and to everyone else unless the user is
    privacy-restricted (the sandbox's stand-in for the "who can see my number" setting).
    """
    is_self = sim.id == viewer_id
    if contact is None:
        contact = not is_self and world.is_contact(viewer_id, sim.id)
    show_phone = is_self or contact or not sim.privacy_restricted
    return types.User(
        id=sim.id,
        is_self=is_self or None,
        contact=contact or None,
        access_hash=world.access_hash(viewer_id, sim.id),
        first_name=sim.first_name,
        last_name=sim.last_name,
        username=sim.username,
        phone=sim.phone if show_phone else None,
        status=types.UserStatusRecently(),
        # Telegram's service account is marked as Telegram marks it.
        verified=(sim.id == SERVICE_USER_ID) or None,
        support=(sim.id == SERVICE_USER_ID) or None,
    )


def users(world: SandboxWorld, viewer_id: int, user_ids: set[int] | list[int]) -> list[types.User]:
    rendered = []
    for user_id in dict.fromkeys(user_ids):
        sim = world.user(user_id)
        if sim is not None:
            rendered.append(user(world, viewer_id, sim))
    return rendered


def _media_id(sim: SimMessage) -> int:
    digest = hashlib.blake2b(struct.pack("<qq", sim.account_id, sim.id), digest_size=8).digest()
    return struct.unpack("<q", digest)[0]


# The photo sizes Telegram lists besides the full one, by type and longest side; see photo_sizes.
PHOTO_THUMB_SIZES = (("m", 320), ("x", 800))
# A PhotoStrippedSize body: the 3-byte header Telethon expands into a tiny JPEG (utils.stripped_photo_to_jpg).
_STRIPPED = bytes([1, 40, 30])


def photo_full_size_type(sim: SimFile) -> str:
    """Telegram's type letter of a photo's full size: "y" up to 1280 px on the longest side, "w" above."""
    return "y" if max(sim.dimensions) <= 1280 else "w"


def photo_sizes(sim: SimFile) -> list[types.TypePhotoSize]:
    """Sizes as Telegram lists them, smallest first: stripped, "m", "x", then the full size (served last by
    Telethon's `download_media`). The sandbox does not re-encode images, so every size serves the file's bytes
    and says so in its `size`; only the declared dimensions shrink."""
    width, height = sim.dimensions
    sizes: list[types.TypePhotoSize] = [types.PhotoStrippedSize(type="i", bytes=_STRIPPED)]
    for size_type, side in PHOTO_THUMB_SIZES:
        scale = min(1.0, side / max(width, height))
        sizes.append(types.PhotoSize(type=size_type, w=max(1, round(width * scale)), h=max(1, round(height * scale)),
                                     size=sim.size))
    sizes.append(types.PhotoSize(type=photo_full_size_type(sim), w=width, h=height, size=sim.size))
    return sizes


def stored_media(world: SandboxWorld, sim: SimFile, dc_id: int) -> types.TypeMessageMedia:
    """A stored file as Telegram sends it: MessageMediaPhoto or MessageMediaDocument with the kind's attributes,
    on the session's DC (no cross-DC fetches), with the access hash and file reference getFile checks."""
    date = datetime.fromtimestamp(sim.date, tz=timezone.utc)
    access_hash = world.files.access_hash(sim.id)
    reference = world.files.file_reference(sim.id)
    if sim.kind == "photo":
        photo = types.Photo(id=sim.id, access_hash=access_hash, file_reference=reference, date=date,
                            sizes=photo_sizes(sim), dc_id=dc_id)
        return types.MessageMediaPhoto(photo=photo)
    document = types.Document(id=sim.id, access_hash=access_hash, file_reference=reference, date=date,
                              mime_type=sim.mime_type, size=sim.size, dc_id=dc_id,
                              attributes=document_attributes(sim))
    # Telegram flags the media itself too (layer 160+), as official clients read it.
    return types.MessageMediaDocument(
        document=document,
        voice=(sim.kind == "voice") or None,
        round=(sim.kind == "video_note") or None,
        video=(sim.kind in ("video", "video_note")) or None,
    )


def media(world: SandboxWorld, sim_message: SimMessage, dc_id: int) -> types.TypeMessageMedia | None:
    """Stored files as Telegram sends them; external media as a photo or document without bytes."""
    sim: SimMedia | None = sim_message.media
    if sim is None:
        return None
    if sim.file_id is not None:
        stored = world.files.get(sim.file_id)
        if stored is not None:
            return stored_media(world, stored, dc_id)
    media_id = _media_id(sim_message)
    date = sim_message.date
    if sim.kind == "photo":
        photo = types.Photo(
            id=media_id,
            access_hash=media_id,
            file_reference=b"",
            date=date,
            sizes=[types.PhotoSize(type="x", w=1, h=1, size=0)],
            dc_id=dc_id,
        )
        return types.MessageMediaPhoto(photo=photo)
    name = sim.name or (sim.url.rsplit("/", 1)[-1] if sim.url else "file")
    mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    document = types.Document(
        id=media_id,
        access_hash=media_id,
        file_reference=b"",
        date=date,
        mime_type=mime_type,
        size=0,
        dc_id=dc_id,
        attributes=[types.DocumentAttributeFilename(file_name=name)],
    )
    return types.MessageMediaDocument(document=document)


def message(world: SandboxWorld, sim: SimMessage, dc_id: int) -> types.Message:
    """A private-chat message in the owner's log; `from_id` is always set, as Telethon expects for user chats."""
    sender_id = sim.account_id if sim.out else sim.peer_id
    return types.Message(
        id=sim.id,
        peer_id=types.PeerUser(sim.peer_id),
        from_id=types.PeerUser(sender_id),
        date=sim.date,
        message=sim.text,
        out=sim.out or None,
        media=media(world, sim, dc_id),
        edit_date=sim.edit_date,
    )


def other_update(world: SandboxWorld, sim: SimUpdate, dc_id: int) -> types.TypeUpdate | None:
    """The TL update of a logged non-message update, as Telegram sends it (pushed or in getDifference's
    other_updates); None for an edit of a message deleted since (Telegram no longer has it to show)."""
    data = sim.data
    if sim.kind == EDIT:
        found = world.messages_by_id(sim.account_id, [data["message_id"]]).get(data["message_id"])
        if found is None:
            return None
        # The message as it was right after this edit (a later edit has its own update).
        edited = SimMessage(found.account_id, found.id, found.peer_id, found.out, data["text"], found.date,
                            found.pts, found.media, data["edit_date"])
        return types.UpdateEditMessage(message=message(world, edited, dc_id), pts=sim.pts, pts_count=sim.pts_count)
    if sim.kind == DELETE:
        # Private-chat deletions name no chat: only message ids (the client must know where they were).
        return types.UpdateDeleteMessages(messages=list(data["message_ids"]), pts=sim.pts, pts_count=sim.pts_count)
    if sim.kind == READ_OUTBOX:
        return types.UpdateReadHistoryOutbox(peer=types.PeerUser(data["peer_id"]), max_id=data["max_id"],
                                             pts=sim.pts, pts_count=sim.pts_count)
    if sim.kind == READ_INBOX:
        return types.UpdateReadHistoryInbox(peer=types.PeerUser(data["peer_id"]), max_id=data["max_id"],
                                            still_unread_count=0, pts=sim.pts, pts_count=sim.pts_count)
    raise ValueError(f"unknown sandbox update kind {sim.kind!r}")


def other_update_peers(sim: SimUpdate) -> list[int]:
    peer = sim.data.get("peer_id")
    return [sim.account_id] + ([peer] if peer is not None else [])


def pushed_other_update(world: SandboxWorld, sim: SimUpdate, dc_id: int) -> types.TypeUpdates:
    """A logged update as Telegram pushes it: in `updates` with the users it mentions; an edit of a message deleted
    meanwhile still moves the pts (an empty deletion), so the session sees no gap."""
    update = other_update(world, sim, dc_id) or types.UpdateDeleteMessages(messages=[], pts=sim.pts,
                                                                            pts_count=sim.pts_count)
    return types.Updates(updates=[update], users=users(world, sim.account_id, other_update_peers(sim)), chats=[],
                         date=sim.date, seq=0)


def new_message_updates(
    world: SandboxWorld, sim: SimMessage, peer: SimUser, peer_known: bool, dc_id: int
) -> types.TypeUpdates:
    """What Telegram pushes for a new private message: short when the account already has the peer,
    otherwise the full message with the peer's user object, so Telethon's entity cache learns it."""
    if peer_known and sim.media is None:
        return types.UpdateShortMessage(
            id=sim.id,
            user_id=sim.peer_id,
            message=sim.text,
            pts=sim.pts,
            pts_count=1,
            date=sim.date,
            out=sim.out or None,
        )
    return types.Updates(
        updates=[types.UpdateNewMessage(message=message(world, sim, dc_id), pts=sim.pts, pts_count=1)],
        users=[user(world, sim.account_id, peer)],
        chats=[],
        date=sim.date,
        seq=0,  # private-chat updates carry no seq; pts alone orders them
    )


def state(world: SandboxWorld, account_id: int) -> types.updates.State:
    return types.updates.State(pts=world.pts(account_id), qts=0, date=_now(), seq=0, unread_count=0)


def peer_notify_settings() -> types.PeerNotifySettings:
    return types.PeerNotifySettings(show_previews=True, silent=False)


def dialog(sim: SimMessage) -> types.Dialog:
    return types.Dialog(
        peer=types.PeerUser(sim.peer_id),
        top_message=sim.id,
        read_inbox_max_id=sim.id,
        read_outbox_max_id=sim.id,
        unread_count=0,
        unread_mentions_count=0,
        unread_reactions_count=0,
        unread_poll_votes_count=0,
        notify_settings=peer_notify_settings(),
    )


def config(dc_id: int, ip_address: str, port: int) -> types.Config:
    """help.getConfig: one DC, the session's own, so Telethon never needs to migrate or export auth."""
    now = _now()
    return types.Config(
        date=now,
        expires=now + 3600,
        test_mode=False,
        this_dc=dc_id,
        dc_options=[types.DcOption(id=dc_id, ip_address=ip_address, port=port)],
        dc_txt_domain_name="sandbox.invalid",
        chat_size_max=200,
        megagroup_size_max=200000,
        forwarded_count_max=100,
        online_update_period_ms=210000,
        offline_blur_timeout_ms=5000,
        offline_idle_timeout_ms=30000,
        online_cloud_timeout_ms=300000,
        notify_cloud_delay_ms=30000,
        notify_default_delay_ms=1500,
        push_chat_period_ms=60000,
        push_chat_limit=2,
        edit_time_limit=172800,
        revoke_time_limit=2147483647,
        revoke_pm_time_limit=2147483647,
        rating_e_decay=2419200,
        stickers_recent_limit=200,
        channels_read_media_period=604800,
        call_receive_timeout_ms=20000,
        call_ring_timeout_ms=90000,
        call_connect_timeout_ms=30000,
        call_packet_timeout_ms=10000,
        me_url_prefix="https://t.me/",
        caption_length_max=1024,
        message_length_max=4096,
        webfile_dc_id=dc_id,
    )


def _now() -> int:
    return int(datetime.now(tz=timezone.utc).timestamp())
