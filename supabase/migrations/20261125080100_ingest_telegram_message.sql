-- Atomic, idempotent write of one incoming Telegram message: find or create (and reactivate) the client, store the
-- message unless it is a redelivery, touch the client. One round trip from telegram-crm-webhook, safe under concurrency.

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
    p_metadata jsonb DEFAULT '{}'::jsonb
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
        WHERE integration_id IS NOT DISTINCT FROM p_integration_id
          AND external_message_id = p_external_message_id
          AND NOT is_outgoing;
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
        message_status, is_outgoing, is_read, external_message_id, file_url, file_type, file_name,
        sender_name, metadata, created_at
    ) VALUES (
        p_organization_id, v_client_id, p_integration_id, p_message_text, 'client', 'telegram',
        'delivered', false, false, p_external_message_id, p_file_url, p_file_type, p_file_name,
        v_name, coalesce(p_metadata, '{}'::jsonb), v_sent_at
    )
    ON CONFLICT (integration_id, external_message_id) WHERE NOT is_outgoing AND external_message_id IS NOT NULL
    DO NOTHING
    RETURNING id INTO v_message_id;

    IF v_message_id IS NULL THEN
        -- Lost a race with a concurrent delivery of the same message: it is a duplicate.
        SELECT id, client_id INTO v_message_id, v_client_id FROM chat_messages
        WHERE integration_id IS NOT DISTINCT FROM p_integration_id
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
    uuid, uuid, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_message(
    uuid, uuid, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb
) TO service_role;
