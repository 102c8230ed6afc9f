"""Telegram's answers to the TL requests our server (and Telethon under it) makes, computed from the world.
One method per request; anything not listed fails loudly with 400 METHOD_NOT_SUPPORTED_BY_SANDBOX."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from telethon.tl import TLRequest, functions, types

from crm_server.sandbox import file_parts, render, srp
from crm_server.sandbox.errors import RpcFailure, SandboxError
from crm_server.sandbox.qr_login import QrLoginHandlers
from crm_server.sandbox.media import SimFile, UploadedDescription, describe_uploaded_document
from crm_server.sandbox.world import LOGIN_CODE, SandboxWorld, SimMedia, SimUser, phone_digits

# Requests that only wrap another one (layer, init, no-updates...): the answer is the inner request's.
_WRAPPERS = frozenset(
    cls.CONSTRUCTOR_ID
    for cls in (
        functions.InvokeWithLayerRequest,
        functions.InitConnectionRequest,
        functions.InvokeWithoutUpdatesRequest,
        functions.InvokeAfterMsgRequest,
        functions.InvokeAfterMsgsRequest,
    )
)
# getDifference returns at most this many messages, then a slice (as Telegram does for long gaps).
DIFFERENCE_LIMIT = 1000
MESSAGE_LENGTH_MAX = 4096
CAPTION_LENGTH_MAX = 1024


class Session(Protocol):
    """The connection a request came in on (a sandbox sender): its auth key and DC, and login binding."""

    key_id: int
    dc_id: int
    address: tuple[str, int]

    def bind(self, account_id: int) -> None: ...

    def unbind(self) -> None: ...


_Handler = Callable[[TLRequest, Session, int], object]
_PublicHandler = Callable[[TLRequest, Session, "int | None"], object]


class RequestHandlers:
    """Answers one request at a time for a world; stateless apart from the world, so one instance serves all."""

    def __init__(self, world: SandboxWorld) -> None:
        self._world = world
        # Requests allowed before login get the (possibly absent) account id; all others require one.
        public: dict[type, _PublicHandler] = {
            functions.help.GetConfigRequest: self.get_config,
            functions.help.GetNearestDcRequest: self.get_nearest_dc,
            functions.PingRequest: self.ping,
            functions.auth.SendCodeRequest: self.send_code,
            functions.auth.ResendCodeRequest: self.resend_code,
            functions.auth.SignInRequest: self.sign_in,
            functions.account.GetPasswordRequest: self.get_password,
            functions.auth.CheckPasswordRequest: self.check_password,
        }
        private: dict[type, _Handler] = {
            functions.auth.LogOutRequest: self.log_out,
            functions.users.GetUsersRequest: self.get_users,
            functions.users.GetFullUserRequest: self.get_full_user,
            functions.contacts.ResolveUsernameRequest: self.resolve_username,
            functions.contacts.ImportContactsRequest: self.import_contacts,
            functions.contacts.GetContactsRequest: self.get_contacts,
            functions.messages.SendMessageRequest: self.send_message,
            functions.messages.SendMediaRequest: self.send_media,
            functions.messages.GetMessagesRequest: self.get_messages,
            functions.messages.GetHistoryRequest: self.get_history,
            functions.messages.GetDialogsRequest: self.get_dialogs,
            functions.messages.GetPeerDialogsRequest: self.get_peer_dialogs,
            functions.messages.ReadHistoryRequest: self.read_history,
            functions.messages.SetTypingRequest: self.acknowledge,
            functions.account.UpdateStatusRequest: self.acknowledge,
            functions.upload.SaveFilePartRequest: self.save_file_part,
            functions.upload.SaveBigFilePartRequest: self.save_big_file_part,
            functions.upload.GetFileRequest: self.get_file,
            functions.updates.GetStateRequest: self.get_state,
            functions.updates.GetDifferenceRequest: self.get_difference,
        }
        # QR login lives in its own module (crm_server.sandbox.qr_login).
        qr = QrLoginHandlers(world)
        public.update(qr.public())  # type: ignore[arg-type]
        private.update(qr.private())  # type: ignore[arg-type]
        self._table: dict[int, tuple[Callable[..., object], bool]] = {}
        for cls, handler in public.items():
            self._table[cls.CONSTRUCTOR_ID] = (handler, False)
        for cls, private_handler in private.items():
            self._table[cls.CONSTRUCTOR_ID] = (private_handler, True)

    def handle(self, request: TLRequest, session: Session) -> object:
        """The result object (TL object, list or bool) for `request`, or raise RpcFailure."""
        while request.CONSTRUCTOR_ID in _WRAPPERS:
            request = request.query  # type: ignore[attr-defined]
        self._world.request_counts[type(request).__name__] += 1
        entry = self._table.get(request.CONSTRUCTOR_ID)
        if entry is None:
            raise RpcFailure(400, "METHOD_NOT_SUPPORTED_BY_SANDBOX")
        handler, needs_login = entry
        # Read per request (not cached) so a revoke, also from another process on the same file, applies at once.
        account_id = self._world.key_owner(session.key_id)
        if needs_login and account_id is None:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        return handler(request, session, account_id)

    # ------------------------------------------------------------ help

    def get_config(self, request: TLRequest, session: Session, account_id: int | None) -> object:
        return render.config(session.dc_id, *session.address)

    def get_nearest_dc(self, request: TLRequest, session: Session, account_id: int | None) -> object:
        return types.NearestDc(country="ZZ", this_dc=session.dc_id, nearest_dc=session.dc_id)

    def ping(self, request: functions.PingRequest, session: Session, account_id: int | None) -> object:
        return types.Pong(msg_id=0, ping_id=request.ping_id)

    def acknowledge(self, request: TLRequest, session: Session, account_id: int) -> object:
        return True

    # ------------------------------------------------------------ login

    def _phone(self, phone_number: str) -> str:
        try:
            return phone_digits(phone_number)
        except SandboxError:
            raise RpcFailure(400, "PHONE_NUMBER_INVALID") from None

    def _code_hash(self, digits: str) -> str:
        # Derived, not stored: a sign-in on a new client object (or after a restart) still matches.
        return format(self._world.access_hash(-1, int(digits)) & (2**64 - 1), "016x")

    def send_code(self, request: functions.auth.SendCodeRequest, session: Session, account_id: int | None) -> object:
        digits = self._phone(request.phone_number)
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeApp(length=len(LOGIN_CODE)),
            phone_code_hash=self._code_hash(digits),
            next_type=types.auth.CodeTypeSms(),
            timeout=60,
        )

    def resend_code(
        self, request: functions.auth.ResendCodeRequest, session: Session, account_id: int | None
    ) -> object:
        digits = self._phone(request.phone_number)
        if request.phone_code_hash != self._code_hash(digits):
            raise RpcFailure(400, "PHONE_CODE_EXPIRED")
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeSms(length=len(LOGIN_CODE)), phone_code_hash=request.phone_code_hash
        )

    def sign_in(self, request: functions.auth.SignInRequest, session: Session, account_id: int | None) -> object:
        digits = self._phone(request.phone_number)
        if not request.phone_code_hash:
            raise RpcFailure(400, "PHONE_CODE_HASH_EMPTY")
        if request.phone_code_hash != self._code_hash(digits):
            raise RpcFailure(400, "PHONE_CODE_EXPIRED")
        if not request.phone_code:
            raise RpcFailure(400, "PHONE_CODE_EMPTY")
        if request.phone_code != LOGIN_CODE:
            raise RpcFailure(400, "PHONE_CODE_INVALID")
        account = self._world.sign_in_account(digits)
        if self._world.password_verifier(account.id) is not None:
            self._world.set_password_pending(session.key_id, account.id)
            raise RpcFailure(401, "SESSION_PASSWORD_NEEDED")
        session.bind(account.id)
        return types.auth.Authorization(user=render.user(self._world, account.id, account))

    def get_password(
        self, request: functions.account.GetPasswordRequest, session: Session, account_id: int | None
    ) -> object:
        user_id = account_id or self._world.password_pending(session.key_id)
        if user_id is None:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        new_algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=os.urandom(32), salt2=os.urandom(16), g=srp.G, p=srp.PRIME
        )
        new_secure_algo = types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000(salt=os.urandom(8))
        verifier = self._world.password_verifier(user_id)
        if verifier is None:
            return types.account.Password(
                new_algo=new_algo, new_secure_algo=new_secure_algo, secure_random=os.urandom(256)
            )
        challenge = srp.new_challenge(verifier)
        return types.account.Password(
            new_algo=new_algo,
            new_secure_algo=new_secure_algo,
            secure_random=os.urandom(256),
            has_password=True,
            current_algo=verifier.algo(),
            srp_B=challenge.srp_b,
            srp_id=self._world.start_password_check(user_id, challenge),
        )

    def check_password(
        self, request: functions.auth.CheckPasswordRequest, session: Session, account_id: int | None
    ) -> object:
        check = request.password
        if not isinstance(check, types.InputCheckPasswordSRP):
            raise RpcFailure(400, "PASSWORD_HASH_INVALID")
        taken = self._world.take_password_check(check.srp_id)
        if taken is None:
            raise RpcFailure(400, "SRP_ID_INVALID")
        user_id, challenge = taken
        if user_id not in (account_id, self._world.password_pending(session.key_id)):
            raise RpcFailure(400, "SRP_ID_INVALID")
        verifier = self._world.password_verifier(user_id)
        if verifier is None or not srp.check(verifier, challenge, check.A, check.M1):
            raise RpcFailure(400, "PASSWORD_HASH_INVALID")
        session.bind(user_id)
        account = self._world.user(user_id)
        assert account is not None
        return types.auth.Authorization(user=render.user(self._world, user_id, account))

    def log_out(self, request: TLRequest, session: Session, account_id: int) -> object:
        session.unbind()
        return types.auth.LoggedOut()

    # ------------------------------------------------------------ users and contacts

    def _input_user(self, account_id: int, input_user: object) -> SimUser | None:
        """The user an InputUser/InputPeer names, if this account may address it (its access hash is right)."""
        if isinstance(input_user, (types.InputUserSelf, types.InputPeerSelf)):
            return self._world.user(account_id)
        if isinstance(input_user, (types.InputUser, types.InputPeerUser)):
            if input_user.access_hash != self._world.access_hash(account_id, input_user.user_id):
                return None
            return self._world.user(input_user.user_id)
        if isinstance(input_user, (types.InputUserFromMessage, types.InputPeerUserFromMessage)):
            return self._world.user(input_user.user_id)
        return None

    def _peer_user(self, account_id: int, peer: object) -> SimUser:
        sim = self._input_user(account_id, peer)
        if sim is None:
            raise RpcFailure(400, "PEER_ID_INVALID")
        return sim

    def get_users(self, request: functions.users.GetUsersRequest, session: Session, account_id: int) -> object:
        found = [self._input_user(account_id, item) for item in request.id]
        return [render.user(self._world, account_id, sim) for sim in found if sim is not None]

    def get_full_user(
        self, request: functions.users.GetFullUserRequest, session: Session, account_id: int
    ) -> object:
        sim = self._input_user(account_id, request.id)
        if sim is None:
            raise RpcFailure(400, "USER_ID_INVALID")
        full = types.UserFull(
            id=sim.id,
            settings=types.PeerSettings(),
            notify_settings=render.peer_notify_settings(),
            common_chats_count=0,
        )
        return types.users.UserFull(full_user=full, chats=[], users=[render.user(self._world, account_id, sim)])

    def resolve_username(
        self, request: functions.contacts.ResolveUsernameRequest, session: Session, account_id: int
    ) -> object:
        sim = self._world.user_by_username(request.username)
        if sim is None:
            raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
        self._world.remember(account_id, [sim.id])
        return types.contacts.ResolvedPeer(
            peer=types.PeerUser(sim.id), chats=[], users=[render.user(self._world, account_id, sim)]
        )

    def import_contacts(
        self, request: functions.contacts.ImportContactsRequest, session: Session, account_id: int
    ) -> object:
        imported, found = [], []
        for contact in request.contacts:
            try:
                sim = self._world.user_by_phone(phone_digits(contact.phone))
            except SandboxError:
                continue  # Telegram silently skips numbers it cannot parse
            if sim is None or sim.id == account_id:
                continue
            imported.append(types.ImportedContact(user_id=sim.id, client_id=contact.client_id))
            found.append(sim)
        self._world.remember(account_id, [sim.id for sim in found], contact=True)
        return types.contacts.ImportedContacts(
            imported=imported,
            popular_invites=[],
            retry_contacts=[],
            users=[render.user(self._world, account_id, sim, contact=True) for sim in found],
        )

    def get_contacts(self, request: TLRequest, session: Session, account_id: int) -> object:
        contacts = self._world.contacts(account_id)
        return types.contacts.Contacts(
            contacts=[types.Contact(user_id=sim.id, mutual=False) for sim in contacts],
            saved_count=0,
            users=[render.user(self._world, account_id, sim, contact=True) for sim in contacts],
        )

    # ------------------------------------------------------------ sending

    def _check_can_send(self, account_id: int, peer: object) -> int:
        """Flood first (Telegram rate-limits the method before looking at the peer), then peer, then privacy."""
        seconds = self._world.take_flood(account_id)
        if seconds is not None:
            raise RpcFailure(420, f"FLOOD_WAIT_{seconds}")
        recipient = self._peer_user(account_id, peer)
        if recipient.privacy_restricted and recipient.id != account_id:
            raise RpcFailure(403, "USER_PRIVACY_RESTRICTED")
        return recipient.id

    def send_message(
        self, request: functions.messages.SendMessageRequest, session: Session, account_id: int
    ) -> object:
        if not request.message or not request.message.strip():
            raise RpcFailure(400, "MESSAGE_EMPTY")
        if len(request.message) > MESSAGE_LENGTH_MAX:
            raise RpcFailure(400, "MESSAGE_TOO_LONG")
        peer_id = self._check_can_send(account_id, request.peer)
        sent, _ = self._world.deliver(account_id, peer_id, request.message, origin=session)  # type: ignore[arg-type]
        assert sent is not None
        # The short form moves the sender's pts by exactly pts_count = 1; Telethon applies it via _store_own_updates.
        return types.UpdateShortSentMessage(id=sent.id, pts=sent.pts, pts_count=1, date=sent.date, out=True)

    def send_media(self, request: functions.messages.SendMediaRequest, session: Session, account_id: int) -> object:
        if len(request.message or "") > CAPTION_LENGTH_MAX:
            raise RpcFailure(400, "MEDIA_CAPTION_TOO_LONG")
        media = _sim_media(request.media)
        if media is None:
            raise RpcFailure(400, "MEDIA_INVALID")
        peer_id = self._check_can_send(account_id, request.peer)
        if isinstance(request.media, (types.InputMediaUploadedPhoto, types.InputMediaUploadedDocument)):
            # Only now, once the send may go ahead, are the parts turned into a file (and forgotten).
            media = self._uploaded_media(request.media, session)
        sent, _ = self._world.deliver(
            account_id, peer_id, request.message or "", media, origin=session  # type: ignore[arg-type]
        )
        assert sent is not None
        # Media answers are full Updates: Telethon maps random_id -> id through UpdateMessageID.
        return types.Updates(
            updates=[
                types.UpdateMessageID(id=sent.id, random_id=request.random_id),
                types.UpdateNewMessage(
                    message=render.message(self._world, sent, session.dc_id), pts=sent.pts, pts_count=1
                ),
            ],
            users=render.users(self._world, account_id, [account_id, peer_id]),
            chats=[],
            date=sent.date,
            seq=0,
        )

    # ------------------------------------------------------------ reading

    def _messages_result(self, account_id: int, dc_id: int, messages: list) -> object:
        peers = [m.peer_id for m in messages if not isinstance(m, types.MessageEmpty)]
        return types.messages.Messages(
            messages=[
                m if isinstance(m, types.MessageEmpty) else render.message(self._world, m, dc_id) for m in messages
            ],
            topics=[],
            chats=[],
            users=render.users(self._world, account_id, [account_id, *peers]),
        )

    def get_messages(
        self, request: functions.messages.GetMessagesRequest, session: Session, account_id: int
    ) -> object:
        ids = [item.id for item in request.id if isinstance(item, types.InputMessageID)]
        found = self._world.messages_by_id(account_id, ids)
        # messageEmpty carries only the id (peer_id is optional in the schema; Telethon's patched class asks for it).
        ordered = [found.get(i) or types.MessageEmpty(id=i, peer_id=None) for i in ids]
        return self._messages_result(account_id, session.dc_id, ordered)

    def get_history(
        self, request: functions.messages.GetHistoryRequest, session: Session, account_id: int
    ) -> object:
        peer_id = self._peer_user(account_id, request.peer).id
        limit = max(1, min(request.limit or 100, 100))
        found = self._world.history(account_id, peer_id, request.offset_id, limit, min_id=request.min_id or 0)
        return self._messages_result(account_id, session.dc_id, found)

    def get_dialogs(
        self, request: functions.messages.GetDialogsRequest, session: Session, account_id: int
    ) -> object:
        tops = self._world.dialogs(account_id, max(1, min(request.limit or 100, 100)))
        return types.messages.Dialogs(
            dialogs=[render.dialog(m) for m in tops],
            messages=[render.message(self._world, m, session.dc_id) for m in tops],
            chats=[],
            users=render.users(self._world, account_id, [m.peer_id for m in tops]),
        )

    def get_peer_dialogs(
        self, request: functions.messages.GetPeerDialogsRequest, session: Session, account_id: int
    ) -> object:
        tops = []
        for dialog_peer in request.peers:
            peer_id = self._peer_user(account_id, getattr(dialog_peer, "peer", None)).id
            tops.extend(self._world.history(account_id, peer_id, 0, 1))
        return types.messages.PeerDialogs(
            dialogs=[render.dialog(m) for m in tops],
            messages=[render.message(self._world, m, session.dc_id) for m in tops],
            chats=[],
            users=render.users(self._world, account_id, [m.peer_id for m in tops]),
            state=render.state(self._world, account_id),
        )

    def read_history(
        self, request: functions.messages.ReadHistoryRequest, session: Session, account_id: int
    ) -> object:
        """The account read a chat: its pts moves by one (updateReadHistoryInbox for its other sessions) and a peer
        that is an account sees the read (updateReadHistoryOutbox)."""
        peer_id = self._peer_user(account_id, request.peer).id
        update = self._world.read_history(account_id, peer_id, request.max_id, origin=session)  # type: ignore[arg-type]
        return types.messages.AffectedMessages(pts=update.pts, pts_count=update.pts_count)

    # ------------------------------------------------------------ files

    def save_file_part(
        self, request: functions.upload.SaveFilePartRequest, session: Session, account_id: int
    ) -> object:
        self._world.files.save_part(session.key_id, request.file_id, request.file_part, request.bytes)
        return True

    def save_big_file_part(
        self, request: functions.upload.SaveBigFilePartRequest, session: Session, account_id: int
    ) -> object:
        self._world.files.save_part(session.key_id, request.file_id, request.file_part, request.bytes,
                                    total_parts=request.file_total_parts)
        return True

    def _uploaded_media(
        self, media: types.InputMediaUploadedPhoto | types.InputMediaUploadedDocument, session: Session
    ) -> SimMedia:
        """The uploaded file of an InputMediaUploaded* joined from its parts (sent on this auth key), stored
        with the kind Telegram would show for it."""
        input_file = media.file
        if not isinstance(input_file, (types.InputFile, types.InputFileBig)):
            raise RpcFailure(400, "FILE_PARTS_INVALID")
        name = input_file.name or None
        if isinstance(media, types.InputMediaUploadedPhoto):
            description = UploadedDescription(kind="photo", mime_type="image/jpeg", name=name)
        else:
            # The attributes decide, `force_file` or not: it only stops Telegram converting the file itself
            # (Telethon sets it for force_document, and adds no video or audio attributes then).
            description = describe_uploaded_document(media.mime_type, media.attributes, name)
        thumb = getattr(media, "thumb", None)
        if isinstance(thumb, (types.InputFile, types.InputFileBig)):
            self._world.files.discard_upload(session.key_id, thumb.id)
        stored = self._world.files.assemble(
            session.key_id, input_file.id, input_file.parts, big=isinstance(input_file, types.InputFileBig),
            md5_checksum=getattr(input_file, "md5_checksum", None), template=description.template(int(time.time())))
        return SimMedia(kind=stored.kind, name=stored.name, file_id=stored.id)

    def get_file(self, request: functions.upload.GetFileRequest, session: Session, account_id: int) -> object:
        """A piece of a stored file, with Telegram's range rules; photo sizes and the document itself."""
        file_parts.check_download_range(request.offset, request.limit, precise=bool(request.precise))
        location = request.location
        if isinstance(location, types.InputPhotoFileLocation):
            sim = self._world.files.check_location(location.id, location.access_hash, location.file_reference)
            if sim.kind != "photo" or location.thumb_size not in _photo_size_types(sim):
                raise RpcFailure(400, "LOCATION_INVALID")
        elif isinstance(location, types.InputDocumentFileLocation):
            sim = self._world.files.check_location(location.id, location.access_hash, location.file_reference)
            # Documents have no thumbnails in the sandbox: only the document itself ("" thumb size).
            if sim.kind == "photo" or location.thumb_size:
                raise RpcFailure(400, "LOCATION_INVALID")
        else:
            raise RpcFailure(400, "LOCATION_INVALID")
        chunk = self._world.files.read(sim.id, request.offset, request.limit)
        file_type = types.storage.FileJpeg() if sim.kind == "photo" else types.storage.FileUnknown()
        return types.upload.File(type=file_type, mtime=sim.date, bytes=chunk)

    # ------------------------------------------------------------ updates

    def get_state(self, request: TLRequest, session: Session, account_id: int) -> object:
        return render.state(self._world, account_id)

    def get_difference(
        self, request: functions.updates.GetDifferenceRequest, session: Session, account_id: int
    ) -> object:
        messages, others, pts = self._world.difference(account_id, request.pts, DIFFERENCE_LIMIT + 1)
        if (messages or others) and self._world.take_gap(account_id):
            # POST /sandbox/gap: as after an outage longer than Telegram keeps updates.
            return types.updates.DifferenceTooLong(pts=pts)
        if request.pts > pts:
            # The client is ahead of the server (e.g. the world was reset): make it adopt the server's pts,
            # or it would silently skip every message up to its own pts as "already seen".
            return types.updates.DifferenceTooLong(pts=pts)
        if not messages and not others:
            return types.updates.DifferenceEmpty(date=int(time.time()), seq=0)
        partial = len(messages) + len(others) > DIFFERENCE_LIMIT
        if partial:
            cut = sorted([m.pts for m in messages] + [u.pts for u in others])[DIFFERENCE_LIMIT - 1]
            messages = [m for m in messages if m.pts <= cut]
            others = [u for u in others if u.pts <= cut]
        rendered = [render.message(self._world, m, session.dc_id) for m in messages]
        other_updates = [u for u in (render.other_update(self._world, sim, session.dc_id) for sim in others) if u]
        peers = [account_id, *(m.peer_id for m in messages)]
        for sim in others:
            peers.extend(render.other_update_peers(sim))
        users = render.users(self._world, account_id, peers)
        last_pts = max([m.pts for m in messages] + [u.pts for u in others])
        last_date = max([m.date for m in messages] + [u.date for u in others])
        if partial:
            intermediate = types.updates.State(pts=last_pts, qts=0, date=last_date, seq=0, unread_count=0)
            return types.updates.DifferenceSlice(
                new_messages=rendered,
                new_encrypted_messages=[],
                other_updates=other_updates,
                chats=[],
                users=users,
                intermediate_state=intermediate,
            )
        state = types.updates.State(pts=pts, qts=0, date=last_date, seq=0, unread_count=0)
        return types.updates.Difference(
            new_messages=rendered, new_encrypted_messages=[], other_updates=other_updates, chats=[], users=users,
            state=state,
        )


def _photo_size_types(sim: SimFile) -> set[str]:
    return {size_type for size_type, _ in render.PHOTO_THUMB_SIZES} | {render.photo_full_size_type(sim)}


def _sim_media(media: object) -> SimMedia | None:
    """External URLs (Telethon's send_file with an http URL) and uploaded files; anything else is unsupported."""
    if isinstance(media, types.InputMediaPhotoExternal):
        return SimMedia(kind="photo", url=media.url)
    if isinstance(media, types.InputMediaDocumentExternal):
        return SimMedia(kind="document", url=media.url, name=media.url.rsplit("/", 1)[-1].split("?", 1)[0] or None)
    if isinstance(media, types.InputMediaUploadedPhoto):
        return SimMedia(kind="photo", name=getattr(media.file, "name", None))
    if isinstance(media, types.InputMediaUploadedDocument):
        names = [a.file_name for a in media.attributes if isinstance(a, types.DocumentAttributeFilename)]
        return SimMedia(kind="document", name=names[0] if names else getattr(media.file, "name", None))
    return None
