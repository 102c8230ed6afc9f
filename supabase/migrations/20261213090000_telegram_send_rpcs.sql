-- A send in two database calls: prepare_telegram_send reads what telegram-send needs before it sends (the caller's
-- organization, the client, an earlier send under the Idempotency-Key, the route and its failover candidates), and
-- store_telegram_send writes what it sent (the row, idempotent by the key, and the client touched).
--
-- Both run as their owner (SECURITY DEFINER, like current_organization_id) and only the service role may call them;
-- RLS does not apply inside, so every statement names the organization explicitly, and the organization is the one
-- the caller's own profile holds (prepare) or is checked against the client and integration named (store).
--
-- prepare answers problems as data, not errors: the function reports them in the order it always has (the caller's
-- organization, then a file of another organization, then the client, the key, the integration), and some of those
-- checks are its own.

CREATE FUNCTION public.send_integration_json(i public.messenger_integrations) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = public
AS $$
    SELECT jsonb_build_object('id', i.id, 'organization_id', i.organization_id, 'messenger_type', i.messenger_type,
                              'provider', i.provider, 'name', i.name, 'is_primary', i.is_primary,
                              'is_enabled', i.is_enabled, 'webhook_key', i.webhook_key, 'settings', i.settings,
                              'created_at', i.created_at)
$$;
REVOKE ALL ON FUNCTION public.send_integration_json(public.messenger_integrations) FROM PUBLIC, anon, authenticated;

-- {organization_id, client, earlier, chosen, failover, problem}; a key absent means "not looked at" (an earlier
-- check decided). `problem`: integration_not_found, provider_not_allowed, integration_disabled, none_enabled.
-- The route: the explicit integration; else the one that received the client's very last incoming message, if it
-- is enabled and allowed; else the primary; else the oldest enabled one. Failover candidates (p_fail_over): every
-- other enabled Telegram integration of the organization, of any provider, primary first, then oldest.
CREATE FUNCTION public.prepare_telegram_send(
    p_user_id uuid,
    p_client_id uuid,
    p_idempotency_key text,
    p_integration_id uuid DEFAULT NULL,
    p_providers text[] DEFAULT ARRAY['telegram_crm', 'wappi'],
    p_fail_over boolean DEFAULT false
) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = public
AS $$
DECLARE
    v_organization_id uuid;
    v_client jsonb;
    v_earlier jsonb;
    v_last_incoming uuid;
    v_chosen messenger_integrations;
    v_problem text;
    v_failover jsonb := '[]'::jsonb;
BEGIN
    SELECT organization_id INTO v_organization_id FROM profiles WHERE id = p_user_id;
    IF v_organization_id IS NULL THEN
        RETURN jsonb_build_object('organization_id', NULL);
    END IF;

    SELECT jsonb_build_object('id', c.id, 'organization_id', c.organization_id, 'name', c.name, 'phone', c.phone,
                              'telegram_user_id', c.telegram_user_id, 'telegram_chat_id', c.telegram_chat_id,
                              'telegram_username', c.telegram_username, 'is_active', c.is_active)
        INTO v_client
        FROM clients AS c WHERE c.id = p_client_id AND c.organization_id = v_organization_id;
    IF v_client IS NULL THEN
        RETURN jsonb_build_object('organization_id', v_organization_id, 'client', NULL);
    END IF;

    SELECT jsonb_build_object('id', m.id, 'client_id', m.client_id, 'integration_id', m.integration_id,
                              'external_message_id', m.external_message_id, 'message_status', m.message_status,
                              'metadata', m.metadata)
        INTO v_earlier
        FROM chat_messages AS m
        WHERE m.organization_id = v_organization_id AND m.idempotency_key = p_idempotency_key AND m.is_outgoing
        LIMIT 1;
    IF v_earlier IS NOT NULL THEN
        -- A replay: the first send's row answers (or refuses, when it was for another client); no route needed.
        RETURN jsonb_build_object('organization_id', v_organization_id, 'client', v_client, 'earlier', v_earlier);
    END IF;

    IF p_integration_id IS NOT NULL THEN
        SELECT * INTO v_chosen FROM messenger_integrations
            WHERE id = p_integration_id AND organization_id = v_organization_id AND messenger_type = 'telegram';
        IF NOT FOUND THEN
            v_problem := 'integration_not_found';
        ELSIF NOT v_chosen.provider = ANY (p_providers) THEN
            v_problem := 'provider_not_allowed';
        ELSIF NOT v_chosen.is_enabled THEN
            v_problem := 'integration_disabled';
        END IF;
    ELSE
        -- The very last incoming message decides; if its integration was deleted since, the primary takes over.
        SELECT m.integration_id INTO v_last_incoming FROM chat_messages AS m
            WHERE m.organization_id = v_organization_id AND m.client_id = p_client_id AND NOT m.is_outgoing
            ORDER BY m.created_at DESC LIMIT 1;
        SELECT * INTO v_chosen FROM messenger_integrations
            WHERE organization_id = v_organization_id AND messenger_type = 'telegram' AND is_enabled
                AND provider = ANY (p_providers)
            ORDER BY (v_last_incoming IS NOT NULL AND id = v_last_incoming) DESC, is_primary DESC, created_at, id
            LIMIT 1;
        IF NOT FOUND THEN
            v_problem := 'none_enabled';
        END IF;
    END IF;
    IF v_problem IS NOT NULL THEN
        RETURN jsonb_build_object('organization_id', v_organization_id, 'client', v_client, 'earlier', NULL,
                                  'problem', v_problem);
    END IF;

    IF p_fail_over THEN
        SELECT coalesce(jsonb_agg(send_integration_json(i) ORDER BY i.is_primary DESC, i.created_at, i.id),
                        '[]'::jsonb)
            INTO v_failover
            FROM messenger_integrations AS i
            WHERE i.organization_id = v_organization_id AND i.messenger_type = 'telegram' AND i.is_enabled
                AND i.id <> v_chosen.id AND i.provider IN ('telegram_crm', 'wappi');
    END IF;
    RETURN jsonb_build_object('organization_id', v_organization_id, 'client', v_client, 'earlier', NULL,
                              'chosen', send_integration_json(v_chosen), 'failover', v_failover);
END
$$;

-- Stores the sent message and touches the client; {message_id, duplicate}. With p_claimed_row_id the claimed row
-- (Wappi) becomes the sent message; otherwise a row already stored under the key (a concurrent or earlier request)
-- is the answer. Touching the client (last_message_at, and the Telegram ids the send resolved when the client had
-- none) is best effort: the message is stored whatever happens to it. PT404: the client or the claimed row is not
-- the organization's (or no longer exists).
CREATE FUNCTION public.store_telegram_send(
    p_organization_id uuid,
    p_client_id uuid,
    p_integration_id uuid,
    p_idempotency_key text,
    p_message_text text DEFAULT NULL,
    p_file_url text DEFAULT NULL,
    p_file_type text DEFAULT NULL,
    p_file_name text DEFAULT NULL,
    p_sender_name text DEFAULT NULL,
    p_external_message_id text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    p_claimed_row_id uuid DEFAULT NULL,
    p_telegram_user_id text DEFAULT NULL,
    p_telegram_chat_id text DEFAULT NULL,
    p_sent_at timestamptz DEFAULT NULL,
    p_external_account text DEFAULT NULL,
    p_external_chat_id text DEFAULT NULL
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public
AS $$
DECLARE
    v_message_id uuid;
    v_duplicate boolean := false;
    v_sent_at timestamptz := coalesce(p_sent_at, now());
BEGIN
    PERFORM 1 FROM clients WHERE id = p_client_id AND organization_id = p_organization_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown client' USING ERRCODE = 'PT404';
    END IF;
    -- The integration is held to the organization by the composite foreign key, as for every writer.

    IF p_claimed_row_id IS NOT NULL THEN
        -- The claim becomes the sent message (its integration too: a failover may have sent it).
        UPDATE chat_messages SET
            client_id = p_client_id, integration_id = p_integration_id, message_text = p_message_text,
            message_type = 'manager', messenger_type = 'telegram', message_status = 'sent', is_outgoing = true,
            is_read = true, idempotency_key = p_idempotency_key, file_url = p_file_url, file_type = p_file_type,
            file_name = p_file_name, sender_name = p_sender_name, external_message_id = p_external_message_id,
            metadata = p_metadata
        WHERE id = p_claimed_row_id AND organization_id = p_organization_id
        RETURNING id INTO v_message_id;
        IF v_message_id IS NULL THEN
            RAISE EXCEPTION 'The claimed message disappeared before it was completed' USING ERRCODE = 'PT404';
        END IF;
    ELSE
        IF p_external_account IS NOT NULL AND p_external_chat_id IS NOT NULL AND p_external_message_id IS NOT NULL
        THEN
            -- The lock the conversation events take for this Telegram message: the account's message.outgoing
            -- event and this send never miss each other's row.
            PERFORM lock_telegram_message(p_organization_id, p_external_account, p_external_message_id);
        END IF;
        SELECT id INTO v_message_id FROM chat_messages
            WHERE organization_id = p_organization_id AND idempotency_key = p_idempotency_key AND is_outgoing;
        IF FOUND THEN
            -- Stored already under this key (a retry whose first answer was lost, or a concurrent request).
            v_duplicate := true;
        ELSIF p_external_account IS NOT NULL AND p_external_chat_id IS NOT NULL
              AND p_external_message_id IS NOT NULL THEN
            -- The account's message.outgoing event stored this very Telegram message first: it becomes the send's
            -- row (one row, whichever of the two arrived first), with the send's key and metadata (not "from the
            -- Telegram app": the CRM sent it).
            UPDATE chat_messages SET
                idempotency_key = p_idempotency_key, sender_name = p_sender_name, integration_id = p_integration_id,
                metadata = (coalesce(metadata, '{}'::jsonb) - 'source') || coalesce(p_metadata, '{}'::jsonb)
            WHERE organization_id = p_organization_id AND external_account = p_external_account
              AND external_chat_id = p_external_chat_id AND external_message_id = p_external_message_id
              AND is_outgoing AND idempotency_key IS NULL
            RETURNING id INTO v_message_id;
        END IF;
        IF v_message_id IS NULL THEN
            INSERT INTO chat_messages (
                organization_id, client_id, integration_id, message_text, message_type, messenger_type,
                message_status, is_outgoing, is_read, idempotency_key, file_url, file_type, file_name, sender_name,
                external_message_id, external_account, external_chat_id, metadata)
            VALUES (
                p_organization_id, p_client_id, p_integration_id, p_message_text, 'manager', 'telegram', 'sent',
                true, true, p_idempotency_key, p_file_url, p_file_type, p_file_name, p_sender_name,
                p_external_message_id, p_external_account, p_external_chat_id, p_metadata)
            ON CONFLICT (organization_id, idempotency_key) WHERE is_outgoing AND idempotency_key IS NOT NULL
                DO NOTHING
            RETURNING id INTO v_message_id;
            IF v_message_id IS NULL THEN
                SELECT id INTO v_message_id FROM chat_messages
                    WHERE organization_id = p_organization_id AND idempotency_key = p_idempotency_key AND is_outgoing;
                v_duplicate := true;
            END IF;
        END IF;
    END IF;

    BEGIN
        BEGIN
            UPDATE clients SET last_message_at = v_sent_at,
                               telegram_user_id = coalesce(telegram_user_id, p_telegram_user_id),
                               telegram_chat_id = coalesce(telegram_chat_id, p_telegram_chat_id)
                WHERE id = p_client_id AND organization_id = p_organization_id;
        EXCEPTION WHEN unique_violation THEN
            -- Another client holds this Telegram user id already (unique per organization): just touch.
            UPDATE clients SET last_message_at = v_sent_at
                WHERE id = p_client_id AND organization_id = p_organization_id;
        END;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'could not touch client %: %', p_client_id, SQLERRM;
    END;
    RETURN jsonb_build_object('message_id', v_message_id, 'duplicate', v_duplicate);
END
$$;

REVOKE ALL ON FUNCTION public.prepare_telegram_send(uuid, uuid, text, uuid, text[], boolean)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.prepare_telegram_send(uuid, uuid, text, uuid, text[], boolean) TO service_role;
REVOKE ALL ON FUNCTION public.store_telegram_send(
    uuid, uuid, uuid, text, text, text, text, text, text, text, jsonb, uuid, text, text, timestamptz, text, text
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.store_telegram_send(
    uuid, uuid, uuid, text, text, text, text, text, text, text, jsonb, uuid, text, text, timestamptz, text, text
) TO service_role;
