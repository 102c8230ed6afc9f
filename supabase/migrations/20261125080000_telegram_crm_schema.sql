-- The CRM tables the Telegram functions read and write: organizations and their users' profiles, clients,
-- messenger integrations, chat messages and notifications, with RLS that keeps each organization to itself.

CREATE TABLE public.organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.profiles (
    id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    organization_id uuid REFERENCES public.organizations (id) ON DELETE SET NULL,
    full_name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_organization_id_idx ON public.profiles (organization_id);

CREATE TABLE public.clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    name text NOT NULL,
    phone text,
    telegram_user_id text,
    telegram_chat_id text,
    telegram_username text,
    is_active boolean NOT NULL DEFAULT true,
    last_message_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clients_organization_telegram_user_key UNIQUE (organization_id, telegram_user_id)
);
CREATE INDEX clients_organization_phone_idx ON public.clients (organization_id, phone);
CREATE INDEX clients_organization_username_idx ON public.clients (organization_id, lower(telegram_username));
CREATE INDEX clients_organization_last_message_idx ON public.clients (organization_id, last_message_at DESC NULLS LAST);

CREATE TABLE public.messenger_integrations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    messenger_type text NOT NULL DEFAULT 'telegram',
    provider text NOT NULL CHECK (provider IN ('telegram_crm', 'wappi')),
    name text,
    is_primary boolean NOT NULL DEFAULT false,
    is_enabled boolean NOT NULL DEFAULT true,
    webhook_key text UNIQUE,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messenger_integrations_organization_idx ON public.messenger_integrations (organization_id, messenger_type);
-- At most one primary integration per organization and messenger.
CREATE UNIQUE INDEX messenger_integrations_one_primary_idx
    ON public.messenger_integrations (organization_id, messenger_type) WHERE is_primary;

CREATE TABLE public.chat_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    client_id uuid NOT NULL REFERENCES public.clients (id) ON DELETE CASCADE,
    integration_id uuid REFERENCES public.messenger_integrations (id) ON DELETE SET NULL,
    message_text text,
    message_type text NOT NULL CHECK (message_type IN ('client', 'manager', 'system')),
    messenger_type text NOT NULL DEFAULT 'telegram',
    message_status text NOT NULL DEFAULT 'delivered',
    is_outgoing boolean NOT NULL DEFAULT false,
    is_read boolean NOT NULL DEFAULT false,
    external_message_id text,
    -- The Idempotency-Key of an outgoing send: a client that retries a send stores one row.
    idempotency_key text,
    file_url text,
    file_type text,
    file_name text,
    sender_name text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_client_created_idx ON public.chat_messages (client_id, created_at DESC);
CREATE INDEX chat_messages_organization_created_idx ON public.chat_messages (organization_id, created_at DESC);
CREATE INDEX chat_messages_integration_incoming_idx
    ON public.chat_messages (client_id, integration_id, created_at DESC) WHERE NOT is_outgoing;
-- A redelivered incoming message (same account, same Telegram message id) can never be stored twice.
CREATE UNIQUE INDEX chat_messages_incoming_external_key
    ON public.chat_messages (integration_id, external_message_id) NULLS NOT DISTINCT
    WHERE NOT is_outgoing AND external_message_id IS NOT NULL;
CREATE UNIQUE INDEX chat_messages_outgoing_idempotency_key
    ON public.chat_messages (organization_id, idempotency_key)
    WHERE is_outgoing AND idempotency_key IS NOT NULL;

-- Read by the CRM's push sender; written by telegram-crm-webhook after a message is stored.
CREATE TABLE public.notifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    type text NOT NULL,
    title text NOT NULL,
    body text,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_read boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_organization_created_idx ON public.notifications (organization_id, created_at DESC);

-- updated_at is kept by the database, so no writer can forget it.
CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER organizations_set_updated_at BEFORE UPDATE ON public.organizations
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER profiles_set_updated_at BEFORE UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER clients_set_updated_at BEFORE UPDATE ON public.clients
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER messenger_integrations_set_updated_at BEFORE UPDATE ON public.messenger_integrations
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- The caller's organization, read with the definer's rights so the profiles policy does not recurse.
CREATE FUNCTION public.current_organization_id() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
AS $$
    SELECT organization_id FROM public.profiles WHERE id = auth.uid()
$$;

ALTER TABLE public.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.messenger_integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notifications ENABLE ROW LEVEL SECURITY;

CREATE POLICY organizations_member_read ON public.organizations
    FOR SELECT TO authenticated USING (id = public.current_organization_id());
CREATE POLICY profiles_same_organization_read ON public.profiles
    FOR SELECT TO authenticated
    USING (id = auth.uid() OR organization_id = public.current_organization_id());
CREATE POLICY profiles_self_update ON public.profiles
    FOR UPDATE TO authenticated USING (id = auth.uid())
    WITH CHECK (id = auth.uid() AND organization_id IS NOT DISTINCT FROM public.current_organization_id());
CREATE POLICY clients_organization_all ON public.clients
    FOR ALL TO authenticated
    USING (organization_id = public.current_organization_id())
    WITH CHECK (organization_id = public.current_organization_id());
CREATE POLICY messenger_integrations_organization_all ON public.messenger_integrations
    FOR ALL TO authenticated
    USING (organization_id = public.current_organization_id())
    WITH CHECK (organization_id = public.current_organization_id());
CREATE POLICY chat_messages_organization_all ON public.chat_messages
    FOR ALL TO authenticated
    USING (organization_id = public.current_organization_id())
    WITH CHECK (organization_id = public.current_organization_id());
CREATE POLICY notifications_organization_all ON public.notifications
    FOR ALL TO authenticated
    USING (organization_id = public.current_organization_id())
    WITH CHECK (organization_id = public.current_organization_id());

-- Integration settings hold API keys and webhook secrets: only the service role (the functions) reads them.
REVOKE SELECT, INSERT, UPDATE ON public.messenger_integrations FROM anon, authenticated;
GRANT SELECT (id, organization_id, messenger_type, provider, name, is_primary, is_enabled, created_at, updated_at)
    ON public.messenger_integrations TO authenticated;
GRANT UPDATE (name, is_primary, is_enabled) ON public.messenger_integrations TO authenticated;
REVOKE ALL ON public.organizations, public.profiles, public.clients, public.chat_messages, public.notifications
    FROM anon;
REVOKE ALL ON public.messenger_integrations FROM anon;
