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
    p_metadata jsonb DEFAULT '{}'::jsonb
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
        p_metadata => p_metadata);

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
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb
) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_webhook(
    uuid, uuid, text, text, text, text, text, text, text, text, text, text, timestamptz, text, text, text, jsonb
) TO service_role;
