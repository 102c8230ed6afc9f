"""Which fileUrl names a chat-media object of this project, and whose it is (no Storage needed: pure parsing)."""

from __future__ import annotations

from typing import Any

import pytest

from functions._shared.chat_media import ChatMediaStore
from functions._shared.errors import FileForbiddenError, ValidationFailedError
from functions._shared.outgoing_files import authorize_file, chat_media_file

SUPABASE_URL = "https://project.supabase.co"
ORG = "11111111-1111-4111-8111-111111111111"
NO_DATABASE: Any = None  # parsing never reaches Storage


@pytest.fixture
def store() -> ChatMediaStore:
    return ChatMediaStore(NO_DATABASE, SUPABASE_URL, public=False)


@pytest.mark.parametrize("file_url", [
    f"{SUPABASE_URL}/storage/v1/object/authenticated/chat-media/{ORG}/uploads/u/a.pdf",
    f"{SUPABASE_URL}/storage/v1/object/public/chat-media/{ORG}/uploads/u/a.pdf",
    f"{SUPABASE_URL}/storage/v1/object/sign/chat-media/{ORG}/uploads/u/a.pdf?token=abc",
    f"chat-media/{ORG}/uploads/u/a.pdf",
])
def test_each_spelling_of_an_object_names_it_and_the_row_keeps_its_plain_url(
        store: ChatMediaStore, file_url: str) -> None:
    file = chat_media_file(store, file_url)
    assert file is not None and file.path == f"{ORG}/uploads/u/a.pdf"
    assert file.stored_url == f"{SUPABASE_URL}/storage/v1/object/authenticated/chat-media/{ORG}/uploads/u/a.pdf"


@pytest.mark.parametrize("file_url", [
    "https://files.example/a.pdf",
    f"https://other.supabase.co/storage/v1/object/authenticated/chat-media/{ORG}/a.pdf",
    f"{SUPABASE_URL}/storage/v1/object/authenticated/other-bucket/{ORG}/a.pdf",
])
def test_other_urls_go_to_the_provider_as_they_are(store: ChatMediaStore, file_url: str) -> None:
    assert chat_media_file(store, file_url) is None


@pytest.mark.parametrize("file_url", [
    f"chat-media/{ORG}/../other/a.pdf",
    f"chat-media/{ORG}/%2e%2e/other/a.pdf",
    f"{SUPABASE_URL}/storage/v1/object/authenticated/chat-media/{ORG}//a.pdf",
    f"chat-media/{ORG}\\..\\a.pdf",
    "chat-media/",
])
def test_a_path_that_could_leave_its_folder_is_refused_naming_file_url(store: ChatMediaStore, file_url: str) -> None:
    with pytest.raises(ValidationFailedError) as refused:
        chat_media_file(store, file_url)
    assert refused.value.field == "fileUrl"


def test_only_the_callers_organization_folder_may_be_sent(store: ChatMediaStore) -> None:
    file = chat_media_file(store, f"chat-media/{ORG}/uploads/u/a.pdf")
    assert file is not None
    authorize_file(file, ORG)
    with pytest.raises(FileForbiddenError) as refused:
        authorize_file(file, "22222222-2222-4222-8222-222222222222")
    assert (refused.value.status_code, refused.value.field) == (403, "fileUrl")
    prefix = chat_media_file(store, f"chat-media/{ORG}x/a.pdf")
    assert prefix is not None
    with pytest.raises(FileForbiddenError):
        authorize_file(prefix, ORG)


def test_in_public_mode_rows_keep_the_public_url() -> None:
    store = ChatMediaStore(NO_DATABASE, SUPABASE_URL, public=True)
    assert store.object_url(f"{ORG}/a.pdf") == f"{SUPABASE_URL}/storage/v1/object/public/chat-media/{ORG}/a.pdf"
