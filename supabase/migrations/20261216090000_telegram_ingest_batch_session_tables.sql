-- ingest_telegram_batch, as in 20261214090000_telegram_ingest_batch.sql, with two costs per batch taken out.
--
-- 1. Its two look-ups of stored messages (redeliveries before the insert, rows a concurrent delivery stored after it)
--    are one index probe per event. The batch's working table has no statistics, so the planner joined it to
--    chat_messages by hashing every stored message of the organization (a bitmap scan on the organization's prefix of
--    chat_messages_telegram_key): each batch read all of its organization's messages. bench/inbound.py, 14 events
--    into an organization of 5,050 messages, with auto_explain: that UPDATE 2.35 ms of the rpc's 18.5 ms, growing
--    with the organization (tests/functions/test_telegram_crm_webhook_batch.py counts the rows read).
-- 2. Its two working tables are made once per database session (ON COMMIT DELETE ROWS) instead of created and
--    dropped by every call. CREATE TEMP TABLE … AS and its drop at commit write and delete catalog rows (pg_class,
--    pg_attribute, pg_type) on every batch, and every statement of the function that reads a new table is planned
--    again. The REST gateway keeps its connections, so a session serves many batches: after its first, a batch only
--    inserts its rows. (bench/inbound.py paced at 492 msg/s, auto_explain on a 14-event batch: the two CREATE TEMP
--    TABLE … AS took 1.27 and 0.95 ms of the call. 30 committed calls of 14 new messages each, one session,
--    organization of 10,050 messages: median 6.28 → 4.10 ms per call.) The tables are new names, so a session that
--    still ran the older function has nothing in the way.

CREATE OR REPLACE FUNCTION public.ingest_telegram_batch(
    p_organization_id uuid,
    p_integration_id uuid,
    p_events jsonb
) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = public
AS $$
DECLARE
    v_account text;
    v_event record;
    v_result jsonb;
    v_others jsonb := '[]'::jsonb;
BEGIN
    -- Once for the whole batch, as each single rpc does for its event: a disabled integration stores nothing (404).
    PERFORM check_telegram_integration(p_organization_id, p_integration_id);
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'p_events must be a JSON array' USING ERRCODE = '22023';
    END IF;
    SELECT settings ->> 'crmPhoneNumber' INTO v_account FROM messenger_integrations WHERE id = p_integration_id;

    -- The message events, with what ingest_telegram_message / ingest_telegram_outgoing derive from their
    -- parameters: the account and chat of the Telegram key, the user whose client it is, the sender's name.
    -- The batch's working tables: made once per database session, emptied at every commit (see the header).
    IF to_regclass('pg_temp.telegram_ingest_messages') IS NULL THEN
        CREATE TEMP TABLE telegram_ingest_messages (
            i integer, kind text, p_telegram_user_id text, p_message_text text, p_notification_title text,
            p_notification_body text, p_external_message_id text, p_telegram_chat_id text, p_account_phone text,
            p_telegram_username text, p_first_name text, p_last_name text, p_phone text, p_sent_at timestamptz,
            p_file_url text, p_file_type text, p_file_name text, p_metadata jsonb, p_notify boolean,
            p_to_user_id text,
            outgoing boolean, account text, chat text, who text, username text, name text, sent_at timestamptz,
            invalid boolean,
            leader integer, new_id uuid, message_id uuid, client_id uuid, duplicate boolean, inserted boolean
        ) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE telegram_ingest_clients (
            who text, i integer, outgoing boolean, chat text, p_telegram_chat_id text, phone text, username text,
            name text, client_id uuid
        ) ON COMMIT DELETE ROWS;
    END IF;
    -- Empty but for an earlier call in this same transaction.
    DELETE FROM telegram_ingest_messages;
    DELETE FROM telegram_ingest_clients;
    INSERT INTO telegram_ingest_messages
    SELECT derived.*,
           CASE WHEN derived.p_external_message_id IS NULL OR derived.invalid THEN derived.i
                ELSE min(derived.i) OVER (PARTITION BY derived.invalid, derived.account, derived.chat,
                                                       derived.p_external_message_id)
           END AS leader,
           gen_random_uuid() AS new_id,
           NULL::uuid AS message_id,
           NULL::uuid AS client_id,
           false AS duplicate,
           false AS inserted
    FROM (
        SELECT e.*,
               e.kind = 'outgoing' AS outgoing,
               CASE WHEN e.kind = 'outgoing' THEN e.p_account_phone
                    ELSE coalesce(nullif(e.p_account_phone, ''), v_account,
                                  'integration:' || coalesce(p_integration_id::text, 'none')) END AS account,
               CASE WHEN e.kind = 'outgoing' THEN e.p_telegram_chat_id
                    ELSE coalesce(nullif(e.p_telegram_chat_id, ''), e.p_telegram_user_id) END AS chat,
               CASE WHEN e.kind = 'outgoing' THEN coalesce(nullif(e.p_to_user_id, ''), e.p_telegram_chat_id)
                    ELSE e.p_telegram_user_id END AS who,
               nullif(ltrim(coalesce(e.p_telegram_username, ''), '@'), '') AS username,
               CASE WHEN e.kind = 'outgoing'
                    THEN 'Telegram ' || coalesce(nullif(e.p_to_user_id, ''), e.p_telegram_chat_id)
                    ELSE coalesce(
                        nullif(btrim(concat_ws(' ', nullif(e.p_first_name, ''), nullif(e.p_last_name, ''))), ''),
                        '@' || nullif(ltrim(coalesce(e.p_telegram_username, ''), '@'), ''),
                        e.p_phone,
                        'Telegram ' || e.p_telegram_user_id) END AS name,
               coalesce(e.p_sent_at, now()) AS sent_at,
               CASE WHEN e.kind = 'outgoing'
                    THEN nullif(e.p_telegram_chat_id, '') IS NULL OR nullif(e.p_external_message_id, '') IS NULL
                         OR nullif(e.p_account_phone, '') IS NULL
                    ELSE nullif(e.p_telegram_user_id, '') IS NULL END AS invalid
        FROM jsonb_to_recordset(p_events) AS e(
            i integer, kind text, p_telegram_user_id text, p_message_text text, p_notification_title text,
            p_notification_body text, p_external_message_id text, p_telegram_chat_id text, p_account_phone text,
            p_telegram_username text, p_first_name text, p_last_name text, p_phone text, p_sent_at timestamptz,
            p_file_url text, p_file_type text, p_file_name text, p_metadata jsonb, p_notify boolean,
            p_to_user_id text)
        WHERE e.kind IN ('message', 'outgoing')
    ) AS derived;

    -- Redeliveries (the row is stored already, in either direction) are answered without touching anything.
    -- One probe of chat_messages_telegram_key per event (LATERAL … LIMIT 1): the temp table has no statistics,
    -- and a plain join let the planner hash it against every stored message of the organization. The ORDER BY
    -- is that index's order: with stale statistics (an organization's messages newer than the last ANALYZE)
    -- the planner otherwise took chat_messages_organization_created_idx and filtered the organization's rows.
    UPDATE telegram_ingest_messages AS b SET message_id = found.id, client_id = found.client_id, duplicate = true
    FROM (SELECT b2.i, m.id, m.client_id
          FROM telegram_ingest_messages AS b2
          CROSS JOIN LATERAL (
              SELECT m.id, m.client_id FROM chat_messages AS m
              WHERE m.organization_id = p_organization_id AND m.external_account = b2.account
                AND m.external_chat_id = b2.chat AND m.external_message_id = b2.p_external_message_id
                AND m.external_message_id IS NOT NULL AND m.external_account IS NOT NULL
                AND m.external_chat_id IS NOT NULL  -- the index's predicate, spelled out for the planner
              ORDER BY m.organization_id, m.external_account, m.external_chat_id, m.external_message_id
              LIMIT 1) AS m
          WHERE NOT b2.invalid AND b2.p_external_message_id IS NOT NULL) AS found
    WHERE b.i = found.i;

    -- The single rpcs' locks, each taken once and in one order (so two batches never wait on each other crosswise):
    -- the user's (find-or-create of the client), then the chat's and the message's (apply_pending_telegram_events
    -- takes them again per row; an advisory lock already held is granted at once).
    PERFORM pg_advisory_xact_lock(hashtextextended(p_organization_id::text || ':' || users.who, 0))
    FROM (SELECT DISTINCT who FROM telegram_ingest_messages
          WHERE NOT invalid AND NOT duplicate AND leader = i ORDER BY who) AS users;
    PERFORM lock_telegram_chat(p_organization_id, chats.account, chats.chat)
    FROM (SELECT DISTINCT account, chat FROM telegram_ingest_messages
          WHERE NOT invalid AND NOT duplicate AND leader = i AND p_external_message_id IS NOT NULL
          ORDER BY account, chat) AS chats;
    PERFORM lock_telegram_message(p_organization_id, keyed.account, keyed.p_external_message_id)
    FROM (SELECT DISTINCT account, p_external_message_id FROM telegram_ingest_messages
          WHERE NOT invalid AND NOT duplicate AND leader = i AND p_external_message_id IS NOT NULL
          ORDER BY account, p_external_message_id) AS keyed;

    -- The clients, one per user: the user's first event in the batch decides how it is found or created, as it
    -- would have one by one (every later event of that user finds it by telegram_user_id).
    INSERT INTO telegram_ingest_clients
    SELECT DISTINCT ON (who) who, i, outgoing, chat, p_telegram_chat_id, p_phone AS phone, username, name,
           NULL::uuid AS client_id
    FROM telegram_ingest_messages
    WHERE NOT invalid AND NOT duplicate AND leader = i
    ORDER BY who, i;

    -- Both rpcs: the client with this Telegram user id.
    UPDATE telegram_ingest_clients AS c SET client_id = cl.id
    FROM clients AS cl
    WHERE cl.organization_id = p_organization_id AND cl.telegram_user_id = c.who;
    -- ingest_telegram_outgoing: else the client of this chat (the oldest).
    UPDATE telegram_ingest_clients AS c SET client_id = found.id
    FROM (SELECT DISTINCT ON (c2.who) c2.who, cl.id
          FROM telegram_ingest_clients AS c2
          JOIN clients AS cl ON cl.organization_id = p_organization_id AND cl.telegram_chat_id = c2.chat
          WHERE c2.outgoing AND c2.client_id IS NULL
          ORDER BY c2.who, cl.created_at) AS found
    WHERE c.who = found.who;
    -- ingest_telegram_message: else a client the CRM created by phone before they ever wrote (the oldest), then by
    -- username; a client is linked to one user only (the batch's first).
    UPDATE telegram_ingest_clients AS c SET client_id = claimed.id
    FROM (SELECT DISTINCT ON (candidate.id) candidate.who, candidate.id
          FROM (SELECT DISTINCT ON (c2.who) c2.who, c2.i, cl.id
                FROM telegram_ingest_clients AS c2
                JOIN clients AS cl ON cl.organization_id = p_organization_id AND cl.phone = c2.phone
                                  AND cl.telegram_user_id IS NULL
                WHERE NOT c2.outgoing AND c2.client_id IS NULL
                  AND cl.id NOT IN (SELECT taken.client_id FROM telegram_ingest_clients AS taken
                                    WHERE taken.client_id IS NOT NULL)
                ORDER BY c2.who, cl.created_at) AS candidate
          ORDER BY candidate.id, candidate.i) AS claimed
    WHERE c.who = claimed.who;
    UPDATE telegram_ingest_clients AS c SET client_id = claimed.id
    FROM (SELECT DISTINCT ON (candidate.id) candidate.who, candidate.id
          FROM (SELECT DISTINCT ON (c2.who) c2.who, c2.i, cl.id
                FROM telegram_ingest_clients AS c2
                JOIN clients AS cl ON cl.organization_id = p_organization_id
                                  AND lower(cl.telegram_username) = lower(c2.username) AND cl.telegram_user_id IS NULL
                WHERE NOT c2.outgoing AND c2.client_id IS NULL
                  AND cl.id NOT IN (SELECT taken.client_id FROM telegram_ingest_clients AS taken
                                    WHERE taken.client_id IS NOT NULL)
                ORDER BY c2.who, cl.created_at) AS candidate
          ORDER BY candidate.id, candidate.i) AS claimed
    WHERE c.who = claimed.who;
    -- Else a new client, as each rpc creates it.
    WITH created AS (
        INSERT INTO clients (organization_id, name, phone, telegram_user_id, telegram_chat_id, telegram_username)
        SELECT p_organization_id, c.name, CASE WHEN c.outgoing THEN NULL ELSE c.phone END, c.who,
               CASE WHEN c.outgoing THEN c.chat ELSE coalesce(c.p_telegram_chat_id, c.who) END,
               CASE WHEN c.outgoing THEN NULL ELSE c.username END
        FROM telegram_ingest_clients AS c
        WHERE c.client_id IS NULL
        ORDER BY c.i
        RETURNING id, telegram_user_id)
    UPDATE telegram_ingest_clients AS c SET client_id = created.id
    FROM created WHERE c.who = created.telegram_user_id;

    UPDATE telegram_ingest_messages AS b SET client_id = c.client_id
    FROM telegram_ingest_clients AS c
    WHERE b.who = c.who AND NOT b.invalid AND NOT b.duplicate AND b.leader = b.i;

    -- The messages, unless a concurrent delivery (or telegram-send's row) holds the key: then that row is the answer.
    WITH inserted AS (
        INSERT INTO chat_messages (
            id, organization_id, client_id, integration_id, message_text, message_type, messenger_type,
            message_status, is_outgoing, is_read, external_message_id, external_account, external_chat_id,
            file_url, file_type, file_name, sender_name, metadata, created_at
        )
        SELECT b.new_id, p_organization_id, b.client_id, p_integration_id, b.p_message_text,
               CASE WHEN b.outgoing THEN 'manager' ELSE 'client' END, 'telegram',
               CASE WHEN b.outgoing THEN 'sent' ELSE 'delivered' END, b.outgoing, b.outgoing,
               b.p_external_message_id, b.account, b.chat, b.p_file_url, b.p_file_type, b.p_file_name,
               CASE WHEN b.outgoing THEN NULL ELSE b.name END, coalesce(b.p_metadata, '{}'::jsonb), b.sent_at
        FROM telegram_ingest_messages AS b
        WHERE NOT b.invalid AND NOT b.duplicate AND b.leader = b.i
        ORDER BY b.i
        ON CONFLICT (organization_id, external_account, external_chat_id, external_message_id)
            WHERE external_message_id IS NOT NULL AND external_account IS NOT NULL AND external_chat_id IS NOT NULL
        DO NOTHING
        RETURNING id)
    UPDATE telegram_ingest_messages AS b SET message_id = b.new_id, inserted = true
    FROM inserted WHERE b.new_id = inserted.id;

    UPDATE telegram_ingest_messages AS b SET message_id = found.id, client_id = found.client_id, duplicate = true
    FROM (SELECT b2.i, m.id, m.client_id
          FROM telegram_ingest_messages AS b2
          CROSS JOIN LATERAL (
              SELECT m.id, m.client_id FROM chat_messages AS m
              WHERE m.organization_id = p_organization_id AND m.external_account = b2.account
                AND m.external_chat_id = b2.chat AND m.external_message_id = b2.p_external_message_id
                AND m.external_message_id IS NOT NULL AND m.external_account IS NOT NULL
                AND m.external_chat_id IS NOT NULL  -- the index's predicate, spelled out for the planner
              ORDER BY m.organization_id, m.external_account, m.external_chat_id, m.external_message_id
              LIMIT 1) AS m
          WHERE NOT b2.invalid AND NOT b2.duplicate AND NOT b2.inserted AND b2.leader = b2.i) AS found
    WHERE b.i = found.i;
    -- Two events of the batch with one key: one row, the later one a duplicate of it.
    UPDATE telegram_ingest_messages AS b SET message_id = first.message_id, client_id = first.client_id,
                                            duplicate = true
    FROM telegram_ingest_messages AS first
    WHERE b.leader <> b.i AND first.i = b.leader AND NOT b.duplicate;

    -- The clients touched once each, as the rpcs touch them per stored message in order (the last username and
    -- chat given win, the phone is kept once known, last_message_at is the newest).
    UPDATE clients AS cl SET
        is_active = true,
        telegram_user_id = CASE WHEN touched.incoming THEN touched.who ELSE cl.telegram_user_id END,
        telegram_chat_id = CASE WHEN touched.incoming
                                THEN coalesce(touched.chat, cl.telegram_chat_id, touched.who)
                                ELSE cl.telegram_chat_id END,
        telegram_username = coalesce(touched.username, cl.telegram_username),
        phone = coalesce(cl.phone, touched.phone),
        last_message_at = greatest(coalesce(cl.last_message_at, touched.sent_at), touched.sent_at)
    FROM (SELECT client_id,
                 bool_or(NOT outgoing) AS incoming,
                 (array_agg(who ORDER BY i DESC) FILTER (WHERE NOT outgoing))[1] AS who,
                 (array_agg(p_telegram_chat_id ORDER BY i DESC)
                     FILTER (WHERE NOT outgoing AND p_telegram_chat_id IS NOT NULL))[1] AS chat,
                 (array_agg(username ORDER BY i DESC) FILTER (WHERE NOT outgoing AND username IS NOT NULL))[1]
                     AS username,
                 (array_agg(p_phone ORDER BY i) FILTER (WHERE NOT outgoing AND p_phone IS NOT NULL))[1] AS phone,
                 max(sent_at) AS sent_at
          FROM telegram_ingest_messages WHERE inserted GROUP BY client_id) AS touched
    WHERE cl.id = touched.client_id;

    -- The organization told of each new incoming message (not of history imports); best effort, in its own
    -- subtransaction as in ingest_telegram_webhook: a lost notification must not lose the messages.
    BEGIN
        INSERT INTO notifications (organization_id, type, title, body, data)
        SELECT p_organization_id, 'telegram_message', b.p_notification_title, b.p_notification_body,
               jsonb_build_object('clientId', b.client_id::text, 'messageId', b.message_id::text,
                                  'integrationId', p_integration_id::text)
        FROM telegram_ingest_messages AS b
        WHERE b.inserted AND NOT b.outgoing AND coalesce(b.p_notify, true)
        ORDER BY b.i;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'could not notify organization %: %', p_organization_id, SQLERRM;
    END;

    -- The other kinds, one by one through their own rpcs (rare in a batch, and each already idempotent); each
    -- re-checks the integration, which costs one indexed lookup.
    FOR v_event IN
        SELECT (e.value ->> 'i')::integer AS i, e.value ->> 'kind' AS kind, e.value AS body
        FROM jsonb_array_elements(p_events) AS e
        WHERE e.value ->> 'kind' NOT IN ('message', 'outgoing')
        ORDER BY 1
    LOOP
        IF v_event.kind = 'apply_telegram_edit' THEN
            v_result := apply_telegram_edit(
                p_organization_id, p_integration_id, v_event.body ->> 'p_account_phone',
                v_event.body ->> 'p_telegram_chat_id', v_event.body ->> 'p_external_message_id',
                v_event.body ->> 'p_message_text', (v_event.body ->> 'p_edit_date')::timestamptz);
        ELSIF v_event.kind = 'apply_telegram_deletion' THEN
            v_result := apply_telegram_deletion(
                p_organization_id, p_integration_id, v_event.body ->> 'p_account_phone',
                v_event.body ->> 'p_telegram_chat_id',
                ARRAY(SELECT jsonb_array_elements_text(v_event.body -> 'p_external_message_ids')),
                (v_event.body ->> 'p_deleted_at')::timestamptz);
        ELSIF v_event.kind = 'apply_telegram_read' THEN
            v_result := apply_telegram_read(
                p_organization_id, p_integration_id, v_event.body ->> 'p_account_phone',
                v_event.body ->> 'p_telegram_chat_id', v_event.body ->> 'p_direction',
                (v_event.body ->> 'p_max_id')::bigint);
        ELSIF v_event.kind = 'record_telegram_account_status' THEN
            v_result := record_telegram_account_status(
                p_organization_id, p_integration_id, v_event.body ->> 'p_state', v_event.body ->> 'p_reason',
                (v_event.body ->> 'p_at')::timestamptz);
        ELSIF v_event.kind = 'record_telegram_login_alert' THEN
            v_result := record_telegram_login_alert(
                p_organization_id, p_integration_id, v_event.body ->> 'p_event_id', v_event.body ->> 'p_title',
                v_event.body ->> 'p_body', coalesce(v_event.body -> 'p_data', '{}'::jsonb));
        ELSE
            RAISE EXCEPTION 'unknown event kind %', v_event.kind USING ERRCODE = '22023';
        END IF;
        v_others := v_others || jsonb_build_array(jsonb_build_object('i', v_event.i, 'result', v_result));
    END LOOP;

    RETURN (
        SELECT coalesce(jsonb_agg(answer ORDER BY (answer ->> 'i')::integer), '[]'::jsonb)
        FROM (
            SELECT CASE WHEN b.invalid
                        THEN jsonb_build_object('i', b.i, 'error', 'the event lacks its Telegram user, chat or id')
                        ELSE jsonb_build_object('i', b.i, 'message_id', b.message_id, 'client_id', b.client_id,
                                                'duplicate', b.duplicate) END AS answer
            FROM telegram_ingest_messages AS b
            UNION ALL
            SELECT value FROM jsonb_array_elements(v_others)
        ) AS answers);
END
$$;

REVOKE ALL ON FUNCTION public.ingest_telegram_batch(uuid, uuid, jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.ingest_telegram_batch(uuid, uuid, jsonb) TO service_role;
