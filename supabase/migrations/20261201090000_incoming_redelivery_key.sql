-- The redelivery key of an incoming message is (organization, account phone, Telegram chat, Telegram message id).
-- Keyed by integration it broke twice: removed integrations leave their messages with a NULL integration_id, and
-- NULLS NOT DISTINCT made every orphaned "message 5" of every organization one value (the next removal failed);
-- and an integration re-pointed to another phone answered the new account's messages as duplicates of the old one's.
-- The new key survives removal (history keeps it) and re-pointing (another account is another key).

ALTER TABLE public.chat_messages
    ADD COLUMN external_account text,
    ADD COLUMN external_chat_id text;
COMMENT ON COLUMN public.chat_messages.external_account IS
    'Incoming: the Telegram account (phone) that received the message; part of the redelivery key';
COMMENT ON COLUMN public.chat_messages.external_chat_id IS
    'Incoming: the Telegram chat the message was in; part of the redelivery key';

-- Backfill, keeping every row: ingest has written account_phone and chat_id into metadata from the start; a row
-- without them falls back to its integration's phone and its client's chat, and one with neither to a value of its
-- own (it never dedupes again, which is what an unknown origin deserves).
UPDATE public.chat_messages AS m SET
    external_account = coalesce(
        nullif(m.metadata ->> 'account_phone', ''),
        (SELECT i.settings ->> 'crmPhoneNumber' FROM public.messenger_integrations AS i WHERE i.id = m.integration_id),
        'row:' || m.id::text),
    external_chat_id = coalesce(
        nullif(m.metadata ->> 'chat_id', ''),
        (SELECT coalesce(c.telegram_chat_id, c.telegram_user_id) FROM public.clients AS c WHERE c.id = m.client_id),
        'row:' || m.id::text)
WHERE NOT m.is_outgoing AND m.external_message_id IS NOT NULL;

-- Two stored rows that are one Telegram message under the new key (possible only through the defects above): the
-- later ones keep their history under a key of their own instead of failing the migration.
WITH ranked AS (
    SELECT id, row_number() OVER (
        PARTITION BY organization_id, external_account, external_chat_id, external_message_id
        ORDER BY created_at, id) AS position
    FROM public.chat_messages
    WHERE NOT is_outgoing AND external_message_id IS NOT NULL
)
UPDATE public.chat_messages AS m SET external_account = m.external_account || '#' || m.id::text
FROM ranked WHERE ranked.id = m.id AND ranked.position > 1;

DROP INDEX public.chat_messages_incoming_external_key;
CREATE UNIQUE INDEX chat_messages_incoming_external_key
    ON public.chat_messages (organization_id, external_account, external_chat_id, external_message_id)
    WHERE NOT is_outgoing AND external_message_id IS NOT NULL;

-- The ingest functions take the account and dedupe by the new key (a new parameter: drop, then create).
DROP FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb);
DROP FUNCTION public.ingest_telegram_message(
    uuid, uuid, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb);

-- Atomic, idempotent write of one incoming Telegram message: find or create (and reactivate) the client, store the
-- message unless it is a redelivery of (organization, account, chat, message id), touch the client.

CREATE FUNCTION public.ingest_telegram_message(
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
    -- The redelivery key: the account that received it (the integration's phone when a sender does not say) and
    -- the chat (a private chat is the user's id when a sender does not say).
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
          AND external_message_id = p_external_message_id AND NOT is_outgoing;
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
        WHERE NOT is_outgoing AND external_message_id IS NOT NULL
    DO NOTHING
    RETURNING id INTO v_message_id;

    IF v_message_id IS NULL THEN
        -- Lost a race with a concurrent delivery of the same message: it is a duplicate.
        SELECT id, client_id INTO v_message_id, v_client_id FROM chat_messages
        WHERE organization_id = p_organization_id AND external_account = v_account AND external_chat_id = v_chat
          AND external_message_id = p_external_message_id AND NOT is_outgoing;
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

REVOKE ALL ON FUNCTION public.ingest_telegram_message(
    uuid, uuid, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_message(
    uuid, uuid, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text
) TO service_role;

-- One webhook, one round trip: telegram-crm-webhook's whole write in a single call. Checks the integration is still
-- there and enabled (the function may have found it in a short-lived cache), stores the message through
-- ingest_telegram_message, and notifies the organization unless the message was a redelivery.

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
    p_account_phone text DEFAULT NULL
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

    IF NOT (v_result ->> 'duplicate')::boolean THEN
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
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb, text
) TO service_role;
