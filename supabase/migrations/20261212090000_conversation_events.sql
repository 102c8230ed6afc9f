-- The conversation as Telegram has it (the contract's "Conversation events"): the account's own messages from its
-- other apps, edits, deletions, read status and the account's state, each stored by one idempotent rpc.
--
-- The Telegram key of a row is (organization, account phone, chat, Telegram message id) in BOTH directions: in a
-- private chat an account numbers its messages in one sequence, whoever wrote them, so an outgoing message id never
-- names an incoming message. telegram-send's rows carry the key too, so a phone-sent event for a message that
-- /telegram/send stored already (a retry crm_server could not tell apart) finds that row instead of adding one.

ALTER TABLE public.chat_messages
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN public.chat_messages.edited_at IS
    'When Telegram says the message was last edited (edit_date); metadata.edits keeps the earlier texts';
COMMENT ON COLUMN public.chat_messages.deleted_at IS
    'When the message was deleted in Telegram; the row is kept (the CRM shows it as deleted)';
COMMENT ON COLUMN public.chat_messages.external_account IS
    'The Telegram account (phone) of the conversation; part of the Telegram key (both directions)';
COMMENT ON COLUMN public.chat_messages.external_chat_id IS
    'The Telegram chat of the message; part of the Telegram key (both directions)';

-- The account's state as crm_server last reported it (account.status). Columns of their own rather than keys of
-- `settings`: connect and telegram-integration-save rewrite settings whole (sealed), which would drop or race a
-- state written beside them; and nothing here is secret, so the admin page may read it directly.
ALTER TABLE public.messenger_integrations
    ADD COLUMN account_state text,
    ADD COLUMN account_state_reason text,
    ADD COLUMN account_state_at timestamptz;
GRANT SELECT (account_state, account_state_reason, account_state_at) ON public.messenger_integrations
    TO authenticated;

-- Outgoing rows telegram-send stored before this migration get their key from what it kept (the chat in metadata,
-- the account in the integration's plain crmPhoneNumber); a row whose key another row holds already keeps none.
WITH keyed AS (
    SELECT m.id, i.settings ->> 'crmPhoneNumber' AS account, m.metadata ->> 'telegramChatId' AS chat,
           row_number() OVER (PARTITION BY m.organization_id, i.settings ->> 'crmPhoneNumber',
                              m.metadata ->> 'telegramChatId', m.external_message_id ORDER BY m.created_at, m.id)
               AS position
    FROM public.chat_messages AS m
    JOIN public.messenger_integrations AS i ON i.id = m.integration_id
    WHERE m.is_outgoing AND m.external_message_id IS NOT NULL AND m.external_account IS NULL
      AND i.provider = 'telegram_crm' AND nullif(i.settings ->> 'crmPhoneNumber', '') IS NOT NULL
      AND nullif(m.metadata ->> 'telegramChatId', '') IS NOT NULL
)
UPDATE public.chat_messages AS m SET external_account = keyed.account, external_chat_id = keyed.chat
FROM keyed
WHERE keyed.id = m.id AND keyed.position = 1
  AND NOT EXISTS (
      SELECT 1 FROM public.chat_messages AS other
      WHERE other.organization_id = m.organization_id AND other.external_account = keyed.account
        AND other.external_chat_id = keyed.chat AND other.external_message_id = m.external_message_id);

DROP INDEX public.chat_messages_incoming_external_key;
CREATE UNIQUE INDEX chat_messages_telegram_key
    ON public.chat_messages (organization_id, external_account, external_chat_id, external_message_id)
    WHERE external_message_id IS NOT NULL AND external_account IS NOT NULL AND external_chat_id IS NOT NULL;

-- A Telegram message id as a number (ids of other senders, `event:<id>`, are not: they are never "up to max_id").
CREATE FUNCTION public.telegram_message_number(p_id text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_id ~ '^[0-9]{1,18}$' THEN p_id::bigint END
$$;

-- Edits and deletions that arrived before their message (crm_server delivers per chat in order, but a deletion
-- without a chat, a history import or a dead letter retried later can overtake it). Applied, then removed, when
-- the message is stored. chat_id NULL: a deletion crm_server could not place in a chat (any chat of the account).
CREATE TABLE public.telegram_pending_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    external_account text NOT NULL,
    external_chat_id text,
    external_message_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('edited', 'deleted')),
    happened_at timestamptz NOT NULL,
    message_text text,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A redelivered early edit or deletion is recorded once.
CREATE UNIQUE INDEX telegram_pending_events_key ON public.telegram_pending_events
    (organization_id, external_account, external_message_id, external_chat_id, kind, happened_at) NULLS NOT DISTINCT;
CREATE INDEX telegram_pending_events_age_idx ON public.telegram_pending_events (organization_id, created_at);

-- How far each side of a chat has read (message.read): the rows stored later below the mark are read already, so
-- a read that overtook its outgoing row is not lost.
CREATE TABLE public.telegram_read_marks (
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    external_account text NOT NULL,
    external_chat_id text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('outbox', 'inbox')),
    max_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, external_account, external_chat_id, direction)
);

ALTER TABLE public.telegram_pending_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.telegram_read_marks ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.telegram_pending_events, public.telegram_read_marks FROM PUBLIC, anon, authenticated;
GRANT ALL ON public.telegram_pending_events, public.telegram_read_marks TO service_role;

-- A pending event waits at most this long: a deletion of a message the CRM never had (one from before the account
-- was connected) would otherwise wait forever. Trimmed by the rpcs that add pending events.
CREATE FUNCTION public.trim_telegram_pending_events(p_organization_id uuid) RETURNS void
    LANGUAGE sql
AS $$
    DELETE FROM public.telegram_pending_events
    WHERE organization_id = p_organization_id AND created_at < now() - interval '30 days'
$$;

-- The locks every writer of a message's events takes, so an event and its message never miss each other: either
-- the event sees the stored row, or the row's insert sees the recorded event.
CREATE FUNCTION public.lock_telegram_message(p_organization_id uuid, p_account text, p_message_id text) RETURNS void
    LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('tg-message:' || p_organization_id::text || ':' || p_account
                                                  || ':' || p_message_id, 0))
$$;
CREATE FUNCTION public.lock_telegram_chat(p_organization_id uuid, p_account text, p_chat_id text) RETURNS void
    LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('tg-chat:' || p_organization_id::text || ':' || p_account
                                                  || ':' || p_chat_id, 0))
$$;

-- Every keyed row, however it is stored (the ingest rpcs, telegram-send's insert), takes what happened to it
-- before it arrived: the edits in order, a deletion, the chat's read marks.
CREATE FUNCTION public.apply_pending_telegram_events() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public
AS $$
DECLARE
    v_event record;
    v_number bigint := telegram_message_number(NEW.external_message_id);
    v_mark bigint;
BEGIN
    PERFORM lock_telegram_chat(NEW.organization_id, NEW.external_account, NEW.external_chat_id);
    PERFORM lock_telegram_message(NEW.organization_id, NEW.external_account, NEW.external_message_id);

    FOR v_event IN
        WITH taken AS (
            DELETE FROM telegram_pending_events
            WHERE organization_id = NEW.organization_id AND external_account = NEW.external_account
              AND external_message_id = NEW.external_message_id
              AND (external_chat_id = NEW.external_chat_id OR (kind = 'deleted' AND external_chat_id IS NULL))
            RETURNING kind, happened_at, message_text)
        SELECT * FROM taken ORDER BY happened_at
    LOOP
        IF v_event.kind = 'deleted' THEN
            NEW.deleted_at := least(coalesce(NEW.deleted_at, v_event.happened_at), v_event.happened_at);
        ELSIF NEW.edited_at IS NULL OR v_event.happened_at > NEW.edited_at THEN
            NEW := telegram_edited(NEW, v_event.message_text, v_event.happened_at);
        END IF;
    END LOOP;

    IF v_number IS NOT NULL THEN
        SELECT max_id INTO v_mark FROM telegram_read_marks
        WHERE organization_id = NEW.organization_id AND external_account = NEW.external_account
          AND external_chat_id = NEW.external_chat_id
          AND direction = CASE WHEN NEW.is_outgoing THEN 'outbox' ELSE 'inbox' END;
        IF v_mark IS NOT NULL AND v_number <= v_mark THEN
            IF NEW.is_outgoing AND NEW.message_status IN ('sent', 'delivered') THEN
                NEW.message_status := 'read';
            ELSIF NOT NEW.is_outgoing THEN
                NEW.is_read := true;
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- A row with one more edit applied (the caller checked it is newer): the text it replaces goes to metadata.edits
-- as {text, edited_at: when it was replaced}; an edit that left the text as it was only moves edited_at.
CREATE FUNCTION public.telegram_edited(p_row public.chat_messages, p_text text, p_edit_date timestamptz)
    RETURNS public.chat_messages
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_text IS DISTINCT FROM p_row.message_text THEN
        p_row.metadata := jsonb_set(coalesce(p_row.metadata, '{}'::jsonb), '{edits}',
            coalesce(p_row.metadata -> 'edits', '[]'::jsonb)
            || jsonb_build_array(jsonb_build_object('text', p_row.message_text, 'edited_at', p_edit_date)));
        p_row.message_text := p_text;
    END IF;
    p_row.edited_at := p_edit_date;
    RETURN p_row;
END
$$;

CREATE TRIGGER chat_messages_apply_pending_telegram_events
    BEFORE INSERT ON public.chat_messages
    FOR EACH ROW
    WHEN (NEW.external_message_id IS NOT NULL AND NEW.external_account IS NOT NULL
          AND NEW.external_chat_id IS NOT NULL)
    EXECUTE FUNCTION public.apply_pending_telegram_events();

-- The authoritative check every rpc below starts with, as ingest_telegram_webhook does: a disabled or deleted
-- integration (or one of another organization) stores nothing. PT404 is answered 404.
CREATE FUNCTION public.check_telegram_integration(p_organization_id uuid, p_integration_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = public
AS $$
BEGIN
    PERFORM 1 FROM messenger_integrations
    WHERE id = p_integration_id AND organization_id = p_organization_id AND is_enabled;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown or disabled integration' USING ERRCODE = 'PT404';
    END IF;
END
$$;

-- ingest_telegram_message again, deduping by the Telegram key in both directions (the index above).
CREATE OR REPLACE FUNCTION public.ingest_telegram_message(
    p_organization_id uuid,
    p_integration_id uuid,
    p_telegram_user_id text,
    p_message_text text,
    p_external_message_id text DEFAULT NULL,
    p_telegram_chat_id text DEFAULT NULL,
    p_telegram_username text DEFAULT NULL,
    p_first_name text DEFAULT NULL,
    p_last_name text DEFAULT NULL,
    p_phone text DEFAULT NULL,
    p_sent_at timestamptz DEFAULT NULL,
    p_file_url text DEFAULT NULL,
    p_file_type text DEFAULT NULL,
    p_file_name text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    p_account_phone text DEFAULT NULL
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_client_id uuid;
    v_message_id uuid;
    v_username text := nullif(ltrim(coalesce(p_telegram_username, ''), '@'), '');
    v_sent_at timestamptz := coalesce(p_sent_at, now());
    v_name text;
    v_account text := coalesce(
        nullif(p_account_phone, ''),
        (SELECT settings ->> 'crmPhoneNumber' FROM messenger_integrations WHERE id = p_integration_id),
        'integration:' || coalesce(p_integration_id::text, 'none'));
    v_chat text := coalesce(nullif(p_telegram_chat_id, ''), p_telegram_user_id);
BEGIN
    IF p_organization_id IS NULL THEN
        RAISE EXCEPTION 'p_organization_id is required' USING ERRCODE = '22023';
    END IF;
    IF nullif(p_telegram_user_id, '') IS NULL THEN
        RAISE EXCEPTION 'p_telegram_user_id is required' USING ERRCODE = '22023';
    END IF;

    -- A redelivery is answered without touching anything.
    IF p_external_message_id IS NOT NULL THEN
        SELECT id, client_id INTO v_message_id, v_client_id
        FROM chat_messages
        WHERE organization_id = p_organization_id AND external_account = v_account AND external_chat_id = v_chat
          AND external_message_id = p_external_message_id;
        IF FOUND THEN
            RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', true);
        END IF;
    END IF;

    -- Serialise writers of the same Telegram user in this organization, so find-or-create cannot race.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_organization_id::text || ':' || p_telegram_user_id, 0));

    v_name := coalesce(
        nullif(btrim(concat_ws(' ', nullif(p_first_name, ''), nullif(p_last_name, ''))), ''),
        '@' || v_username,
        p_phone,
        'Telegram ' || p_telegram_user_id
    );

    SELECT id INTO v_client_id FROM clients
    WHERE organization_id = p_organization_id AND telegram_user_id = p_telegram_user_id;

    -- A client the CRM created by phone (or username) before they ever wrote is the same person: link it.
    IF v_client_id IS NULL AND p_phone IS NOT NULL THEN
        SELECT id INTO v_client_id FROM clients
        WHERE organization_id = p_organization_id AND phone = p_phone AND telegram_user_id IS NULL
        ORDER BY created_at LIMIT 1 FOR UPDATE;
    END IF;
    IF v_client_id IS NULL AND v_username IS NOT NULL THEN
        SELECT id INTO v_client_id FROM clients
        WHERE organization_id = p_organization_id AND lower(telegram_username) = lower(v_username)
          AND telegram_user_id IS NULL
        ORDER BY created_at LIMIT 1 FOR UPDATE;
    END IF;

    IF v_client_id IS NULL THEN
        INSERT INTO clients (organization_id, name, phone, telegram_user_id, telegram_chat_id, telegram_username)
        VALUES (p_organization_id, v_name, p_phone, p_telegram_user_id,
                coalesce(p_telegram_chat_id, p_telegram_user_id), v_username)
        RETURNING id INTO v_client_id;
    END IF;

    INSERT INTO chat_messages (
        organization_id, client_id, integration_id, message_text, message_type, messenger_type,
        message_status, is_outgoing, is_read, external_message_id, external_account, external_chat_id,
        file_url, file_type, file_name, sender_name, metadata, created_at
    ) VALUES (
        p_organization_id, v_client_id, p_integration_id, p_message_text, 'client', 'telegram',
        'delivered', false, false, p_external_message_id, v_account, v_chat,
        p_file_url, p_file_type, p_file_name, v_name, coalesce(p_metadata, '{}'::jsonb), v_sent_at
    )
    ON CONFLICT (organization_id, external_account, external_chat_id, external_message_id)
        WHERE external_message_id IS NOT NULL AND external_account IS NOT NULL AND external_chat_id IS NOT NULL
    DO NOTHING
    RETURNING id INTO v_message_id;

    IF v_message_id IS NULL THEN
        -- Lost a race with a concurrent delivery of the same message: it is a duplicate.
        SELECT id, client_id INTO v_message_id, v_client_id FROM chat_messages
        WHERE organization_id = p_organization_id AND external_account = v_account AND external_chat_id = v_chat
          AND external_message_id = p_external_message_id;
        RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', true);
    END IF;

    UPDATE clients SET
        is_active = true,
        telegram_user_id = p_telegram_user_id,
        telegram_chat_id = coalesce(p_telegram_chat_id, telegram_chat_id, p_telegram_user_id),
        telegram_username = coalesce(v_username, telegram_username),
        phone = coalesce(phone, p_phone),
        last_message_at = greatest(coalesce(last_message_at, v_sent_at), v_sent_at)
    WHERE id = v_client_id;

    RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', false);
END
$$;

-- ingest_telegram_webhook with `p_notify`: a message imported from the account's history (`history: true`) is
-- stored like any other but announces nothing (a new parameter: drop, then create).
DROP FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text);

CREATE FUNCTION public.ingest_telegram_webhook(
    p_organization_id uuid,
    p_integration_id uuid,
    p_telegram_user_id text,
    p_message_text text,
    p_notification_title text,
    p_notification_body text DEFAULT NULL,
    p_external_message_id text DEFAULT NULL,
    p_telegram_chat_id text DEFAULT NULL,
    p_telegram_username text DEFAULT NULL,
    p_first_name text DEFAULT NULL,
    p_last_name text DEFAULT NULL,
    p_phone text DEFAULT NULL,
    p_sent_at timestamptz DEFAULT NULL,
    p_file_url text DEFAULT NULL,
    p_file_type text DEFAULT NULL,
    p_file_name text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    p_account_phone text DEFAULT NULL,
    p_notify boolean DEFAULT true
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_result jsonb;
BEGIN
    -- The authoritative check: a disabled or deleted integration (or one moved to another organization) stores
    -- nothing, however fresh the caller's copy of it was. PT404 is answered 404, as PostgREST answers it.
    PERFORM 1 FROM messenger_integrations
    WHERE id = p_integration_id AND organization_id = p_organization_id AND is_enabled;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown or disabled integration' USING ERRCODE = 'PT404';
    END IF;

    v_result := ingest_telegram_message(
        p_organization_id => p_organization_id,
        p_integration_id => p_integration_id,
        p_telegram_user_id => p_telegram_user_id,
        p_message_text => p_message_text,
        p_external_message_id => p_external_message_id,
        p_telegram_chat_id => p_telegram_chat_id,
        p_telegram_username => p_telegram_username,
        p_first_name => p_first_name,
        p_last_name => p_last_name,
        p_phone => p_phone,
        p_sent_at => p_sent_at,
        p_file_url => p_file_url,
        p_file_type => p_file_type,
        p_file_name => p_file_name,
        p_metadata => p_metadata,
        p_account_phone => p_account_phone);

    IF p_notify AND NOT (v_result ->> 'duplicate')::boolean THEN
        -- Best effort, in its own subtransaction: a lost notification must not lose the message.
        BEGIN
            INSERT INTO notifications (organization_id, type, title, body, data)
            VALUES (p_organization_id, 'telegram_message', p_notification_title, p_notification_body,
                    jsonb_build_object('clientId', v_result ->> 'client_id', 'messageId', v_result ->> 'message_id',
                                       'integrationId', p_integration_id::text));
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'could not notify organization %: %', p_organization_id, SQLERRM;
        END;
    END IF;
    RETURN v_result;
END
$$;

REVOKE ALL ON FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text, boolean
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text, boolean
) TO service_role;

-- message.outgoing: the account wrote from its phone or desktop app. The client is the chat's user (found by user
-- or chat id; a conversation the manager started from the phone makes one); the row is the manager's, never
-- notified (the manager wrote it), and never a second row for a message stored already (telegram-send's row).
CREATE FUNCTION public.ingest_telegram_outgoing(
    p_organization_id uuid,
    p_integration_id uuid,
    p_account_phone text,
    p_telegram_chat_id text,
    p_external_message_id text,
    p_to_user_id text,
    p_message_text text,
    p_sent_at timestamptz DEFAULT NULL,
    p_file_url text DEFAULT NULL,
    p_file_type text DEFAULT NULL,
    p_file_name text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_client_id uuid;
    v_message_id uuid;
    v_sent_at timestamptz := coalesce(p_sent_at, now());
    v_user text := coalesce(nullif(p_to_user_id, ''), p_telegram_chat_id);
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    IF nullif(p_telegram_chat_id, '') IS NULL OR nullif(p_external_message_id, '') IS NULL
       OR nullif(p_account_phone, '') IS NULL THEN
        RAISE EXCEPTION 'p_account_phone, p_telegram_chat_id and p_external_message_id are required'
            USING ERRCODE = '22023';
    END IF;

    SELECT id, client_id INTO v_message_id, v_client_id FROM chat_messages
    WHERE organization_id = p_organization_id AND external_account = p_account_phone
      AND external_chat_id = p_telegram_chat_id AND external_message_id = p_external_message_id;
    IF FOUND THEN
        RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', true);
    END IF;

    -- The same lock as ingest_telegram_message's: one find-or-create of this user at a time.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_organization_id::text || ':' || v_user, 0));
    SELECT id INTO v_client_id FROM clients
    WHERE organization_id = p_organization_id AND (telegram_user_id = v_user OR telegram_chat_id = p_telegram_chat_id)
    ORDER BY (telegram_user_id = v_user) DESC NULLS LAST, created_at LIMIT 1;
    IF v_client_id IS NULL THEN
        INSERT INTO clients (organization_id, name, telegram_user_id, telegram_chat_id)
        VALUES (p_organization_id, 'Telegram ' || v_user, v_user, p_telegram_chat_id)
        RETURNING id INTO v_client_id;
    END IF;

    INSERT INTO chat_messages (
        organization_id, client_id, integration_id, message_text, message_type, messenger_type,
        message_status, is_outgoing, is_read, external_message_id, external_account, external_chat_id,
        file_url, file_type, file_name, metadata, created_at
    ) VALUES (
        p_organization_id, v_client_id, p_integration_id, p_message_text, 'manager', 'telegram',
        'sent', true, true, p_external_message_id, p_account_phone, p_telegram_chat_id,
        p_file_url, p_file_type, p_file_name, coalesce(p_metadata, '{}'::jsonb), v_sent_at
    )
    ON CONFLICT (organization_id, external_account, external_chat_id, external_message_id)
        WHERE external_message_id IS NOT NULL AND external_account IS NOT NULL AND external_chat_id IS NOT NULL
    DO NOTHING
    RETURNING id INTO v_message_id;

    IF v_message_id IS NULL THEN
        -- telegram-send stored it meanwhile (or a concurrent delivery did): one row.
        SELECT id, client_id INTO v_message_id, v_client_id FROM chat_messages
        WHERE organization_id = p_organization_id AND external_account = p_account_phone
          AND external_chat_id = p_telegram_chat_id AND external_message_id = p_external_message_id;
        RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', true);
    END IF;

    UPDATE clients SET
        is_active = true,
        last_message_at = greatest(coalesce(last_message_at, v_sent_at), v_sent_at)
    WHERE id = v_client_id;
    RETURN jsonb_build_object('message_id', v_message_id, 'client_id', v_client_id, 'duplicate', false);
END
$$;

-- message.edited: the newest edit wins (an older one arriving late changes nothing); the same edit twice is one.
-- Before its message is stored, the edit waits in telegram_pending_events.
CREATE FUNCTION public.apply_telegram_edit(
    p_organization_id uuid,
    p_integration_id uuid,
    p_account_phone text,
    p_telegram_chat_id text,
    p_external_message_id text,
    p_message_text text,
    p_edit_date timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_row chat_messages;
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    PERFORM lock_telegram_message(p_organization_id, p_account_phone, p_external_message_id);
    SELECT * INTO v_row FROM chat_messages
    WHERE organization_id = p_organization_id AND external_account = p_account_phone
      AND external_chat_id = p_telegram_chat_id AND external_message_id = p_external_message_id
    FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO telegram_pending_events (organization_id, external_account, external_chat_id,
                                             external_message_id, kind, happened_at, message_text)
        VALUES (p_organization_id, p_account_phone, p_telegram_chat_id, p_external_message_id, 'edited',
                p_edit_date, p_message_text)
        ON CONFLICT DO NOTHING;
        PERFORM trim_telegram_pending_events(p_organization_id);
        RETURN jsonb_build_object('status', 'pending');
    END IF;
    IF v_row.edited_at IS NOT NULL AND p_edit_date <= v_row.edited_at THEN
        RETURN jsonb_build_object('status', 'duplicate', 'message_id', v_row.id, 'client_id', v_row.client_id);
    END IF;
    v_row := telegram_edited(v_row, p_message_text, p_edit_date);
    UPDATE chat_messages SET message_text = v_row.message_text, edited_at = v_row.edited_at,
                             metadata = v_row.metadata
    WHERE id = v_row.id;
    RETURN jsonb_build_object('status', 'applied', 'message_id', v_row.id, 'client_id', v_row.client_id);
END
$$;

-- message.deleted: deleted_at set, the row kept. A null chat (Telegram names none for private chats and crm_server
-- could not place it) matches the message id in any chat of the account: ids are unique per account.
CREATE FUNCTION public.apply_telegram_deletion(
    p_organization_id uuid,
    p_integration_id uuid,
    p_account_phone text,
    p_telegram_chat_id text,
    p_external_message_ids text[],
    p_deleted_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_message_id text;
    v_deleted integer := 0;
    v_pending integer := 0;
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    -- In order, so two deliveries of overlapping lists never take the locks crosswise.
    FOR v_message_id IN SELECT DISTINCT unnest(p_external_message_ids) ORDER BY 1 LOOP
        PERFORM lock_telegram_message(p_organization_id, p_account_phone, v_message_id);
        PERFORM 1 FROM chat_messages
        WHERE organization_id = p_organization_id AND external_account = p_account_phone
          AND external_message_id = v_message_id
          AND (p_telegram_chat_id IS NULL OR external_chat_id = p_telegram_chat_id);
        IF FOUND THEN
            UPDATE chat_messages SET deleted_at = p_deleted_at
            WHERE organization_id = p_organization_id AND external_account = p_account_phone
              AND external_message_id = v_message_id
              AND (p_telegram_chat_id IS NULL OR external_chat_id = p_telegram_chat_id)
              AND deleted_at IS NULL;
            v_deleted := v_deleted + 1;
        ELSE
            INSERT INTO telegram_pending_events (organization_id, external_account, external_chat_id,
                                                 external_message_id, kind, happened_at)
            VALUES (p_organization_id, p_account_phone, p_telegram_chat_id, v_message_id, 'deleted', p_deleted_at)
            ON CONFLICT DO NOTHING;
            v_pending := v_pending + 1;
        END IF;
    END LOOP;
    IF v_pending > 0 THEN
        PERFORM trim_telegram_pending_events(p_organization_id);
    END IF;
    RETURN jsonb_build_object('deleted', v_deleted, 'pending', v_pending);
END
$$;

-- message.read: outbox (the client read the account's messages up to max_id) marks outgoing rows 'read', never back
-- to 'sent'; inbox (the account read the client's, from any app) marks incoming rows read. The mark stays for the
-- rows stored later (the trigger above).
CREATE FUNCTION public.apply_telegram_read(
    p_organization_id uuid,
    p_integration_id uuid,
    p_account_phone text,
    p_telegram_chat_id text,
    p_direction text,
    p_max_id bigint
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_updated integer;
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    IF p_direction NOT IN ('outbox', 'inbox') THEN
        RAISE EXCEPTION 'p_direction must be outbox or inbox' USING ERRCODE = '22023';
    END IF;
    PERFORM lock_telegram_chat(p_organization_id, p_account_phone, p_telegram_chat_id);
    INSERT INTO telegram_read_marks AS mark (organization_id, external_account, external_chat_id, direction, max_id)
    VALUES (p_organization_id, p_account_phone, p_telegram_chat_id, p_direction, p_max_id)
    ON CONFLICT (organization_id, external_account, external_chat_id, direction)
    DO UPDATE SET max_id = greatest(mark.max_id, excluded.max_id), updated_at = now();

    IF p_direction = 'outbox' THEN
        UPDATE chat_messages SET message_status = 'read'
        WHERE organization_id = p_organization_id AND external_account = p_account_phone
          AND external_chat_id = p_telegram_chat_id AND is_outgoing AND message_status IN ('sent', 'delivered')
          AND telegram_message_number(external_message_id) <= p_max_id;
    ELSE
        UPDATE chat_messages SET is_read = true
        WHERE organization_id = p_organization_id AND external_account = p_account_phone
          AND external_chat_id = p_telegram_chat_id AND NOT is_outgoing AND NOT is_read
          AND telegram_message_number(external_message_id) <= p_max_id;
    END IF;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    RETURN jsonb_build_object('updated', v_updated);
END
$$;

-- account.status: the newest report wins (an older one redelivered late changes nothing).
CREATE FUNCTION public.record_telegram_account_status(
    p_organization_id uuid,
    p_integration_id uuid,
    p_state text,
    p_reason text,
    p_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    UPDATE messenger_integrations SET account_state = p_state, account_state_reason = p_reason,
                                      account_state_at = p_at
    WHERE id = p_integration_id AND (account_state_at IS NULL OR account_state_at < p_at);
    RETURN jsonb_build_object('applied', FOUND);
END
$$;

-- account.login_alert: a notification for the organization (the event has no code and no text), once per event.
CREATE FUNCTION public.record_telegram_login_alert(
    p_organization_id uuid,
    p_integration_id uuid,
    p_event_id text,
    p_title text,
    p_body text,
    p_data jsonb DEFAULT '{}'::jsonb
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_id uuid;
BEGIN
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    PERFORM pg_advisory_xact_lock(hashtextextended('tg-alert:' || p_organization_id::text || ':' || p_event_id, 0));
    SELECT id INTO v_id FROM notifications
    WHERE organization_id = p_organization_id AND type = 'telegram_login_alert' AND data ->> 'eventId' = p_event_id;
    IF FOUND THEN
        RETURN jsonb_build_object('notification_id', v_id, 'duplicate', true);
    END IF;
    INSERT INTO notifications (organization_id, type, title, body, data)
    VALUES (p_organization_id, 'telegram_login_alert', p_title, p_body,
            coalesce(p_data, '{}'::jsonb) || jsonb_build_object('eventId', p_event_id,
                                                                'integrationId', p_integration_id::text))
    RETURNING id INTO v_id;
    RETURN jsonb_build_object('notification_id', v_id, 'duplicate', false);
END
$$;

DO $$
DECLARE
    v_function text;
BEGIN
    FOREACH v_function IN ARRAY ARRAY[
        'check_telegram_integration(uuid, uuid)',
        'lock_telegram_message(uuid, text, text)',
        'lock_telegram_chat(uuid, text, text)',
        'trim_telegram_pending_events(uuid)',
        'apply_pending_telegram_events()',
        'ingest_telegram_outgoing(uuid, uuid, text, text, text, text, text, timestamptz, text, text, text, jsonb)',
        'apply_telegram_edit(uuid, uuid, text, text, text, text, timestamptz)',
        'apply_telegram_deletion(uuid, uuid, text, text, text[], timestamptz)',
        'apply_telegram_read(uuid, uuid, text, text, text, bigint)',
        'record_telegram_account_status(uuid, uuid, text, text, timestamptz)',
        'record_telegram_login_alert(uuid, uuid, text, text, text, jsonb)'
    ] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION public.%s FROM PUBLIC, anon, authenticated', v_function);
        EXECUTE format('GRANT EXECUTE ON FUNCTION public.%s TO service_role', v_function);
    END LOOP;
END
$$;
