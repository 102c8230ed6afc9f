"""The file of an outgoing message: a chat-media object named by `fileUrl` is the caller's organization's or refused
(403), and becomes a short-lived signed URL for the provider; the row keeps the object's own URL, never the
signed one. Any other http(s) URL goes to the provider as it is (crm_server fetches it, SSRF-guarded itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from functions._shared.chat_media import ChatMediaStore
from functions._shared.errors import FileForbiddenError


@dataclass(frozen=True)
class OutgoingFile:
    """A chat-media object to send: its path, and the URL the message row keeps for it."""

    path: str
    stored_url: str


def chat_media_file(store: ChatMediaStore, file_url: str | None) -> OutgoingFile | None:
    """The chat-media object `file_url` names (422 for a path that could leave its folder), or None for a URL that
    is not one of this project's objects."""
    if file_url is None:
        return None
    path = store.object_path(file_url)
    if path is None:
        return None
    return OutgoingFile(path, store.object_url(path))


def authorize_file(file: OutgoingFile, organization_id: str) -> None:
    """The service role signs any object: only the caller's organization folder (the bucket's RLS rule for its users)
    may be handed out. Any other one is 403, as the user's own read of it would be."""
    if file.path.split("/", 1)[0] != organization_id:
        raise FileForbiddenError()


async def provider_url(store: ChatMediaStore, file: OutgoingFile, *, expires_in: int) -> str:
    """A signed URL that reads the object for `expires_in` seconds: long enough for crm_server (or Wappi) to fetch
    it now, too short to be worth keeping."""
    return await store.signed_url(file.path, expires_in)
