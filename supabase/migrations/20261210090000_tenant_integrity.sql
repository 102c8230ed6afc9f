-- Tenant integrity in the schema: a row references only rows of its own organization, whoever writes it.
-- Single-column foreign keys let a user of organization A store a message in A naming B's client or integration
-- (RLS checks only the row's own organization_id), and a notification in A addressed to B's user.
--
-- Every reference from one tenant-owned row to another is now a composite foreign key that includes
-- organization_id: chat_messages (client_id, organization_id) -> clients, chat_messages (integration_id,
-- organization_id) -> messenger_integrations, notifications (user_id, organization_id) -> profiles. With the existing
-- policies' WITH CHECK (organization_id = the caller's organization) that is "the reference belongs to the caller's
-- organization" for users, and the foreign key holds the service role (the functions) to it too, where RLS does
-- not apply. No policy needs a subquery of its own: the key is checked on every INSERT and UPDATE by every role.
--
-- Errors tell nothing: another organization's id fails the same constraint, with the same message and the same
-- detail (the key the caller sent), as an id that does not exist. The single-column keys are dropped, not kept
-- beside the composite ones, because two keys failing in a different order would tell the two apart.
--
-- Rows already crossing organizations are repaired, never deleted, and each repair is recorded with the old value
-- in supabase_migrations.tenant_integrity_repairs (not exposed by the REST API) and counted in a NOTICE:
--   * a message naming another organization's client is moved to a client of its own organization created for
--     it ("Unassigned messages"); its text stays where it was written, never shown to the other organization;
--   * a message naming another organization's integration keeps its history with integration_id NULL, as a
--     removed integration leaves it;
--   * a notification addressed to a user outside its organization (or without a profile) is addressed to no one.
--
-- Semantics kept or chosen at run time:
--   * deleting an integration leaves its messages with integration_id NULL (ON DELETE SET NULL (integration_id):
--     only that column, organization_id stays); deleting a client deletes its messages, as before;
--   * a client or an integration that has messages cannot move to another organization (the key refuses it):
--     history pointing across organizations is what this migration removes;
--   * a user whose profile leaves an organization (moved, or the organization deleted) leaves their notifications
--     there, addressed to no one, instead of blocking the move.

-- No writer may add a crossing row between the repair and the constraints. Every lock ALTER TABLE needs, taken at
-- once: a lock upgraded later could deadlock against a reader that goes on to write.
LOCK TABLE public.clients, public.messenger_integrations, public.profiles, public.chat_messages,
    public.notifications IN ACCESS EXCLUSIVE MODE;

CREATE TABLE supabase_migrations.tenant_integrity_repairs (
    id bigserial PRIMARY KEY,
    repaired_at timestamptz NOT NULL DEFAULT now(),
    table_name text NOT NULL,
    row_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    column_name text NOT NULL,
    original_value uuid,
    repaired_value uuid
);
COMMENT ON TABLE supabase_migrations.tenant_integrity_repairs IS
    'Rows 20261210090000_tenant_integrity found referencing another organization, and what it changed';

DO $$
DECLARE
    v_count bigint;
BEGIN
    -- Messages naming another organization's client: one client of their own organization takes them.
    CREATE TEMPORARY TABLE crossing_client ON COMMIT DROP AS
        SELECT m.id, m.organization_id, m.client_id
        FROM public.chat_messages AS m JOIN public.clients AS c ON c.id = m.client_id
        WHERE c.organization_id <> m.organization_id;
    CREATE TEMPORARY TABLE unassigned_client ON COMMIT DROP AS
        SELECT organization_id, gen_random_uuid() AS client_id
        FROM crossing_client GROUP BY organization_id;
    INSERT INTO public.clients (id, organization_id, name, is_active)
        SELECT client_id, organization_id, 'Unassigned messages', false FROM unassigned_client;
    INSERT INTO supabase_migrations.tenant_integrity_repairs
            (table_name, row_id, organization_id, column_name, original_value, repaired_value)
        SELECT 'chat_messages', x.id, x.organization_id, 'client_id', x.client_id, u.client_id
        FROM crossing_client AS x JOIN unassigned_client AS u USING (organization_id);
    UPDATE public.chat_messages AS m SET client_id = u.client_id
        FROM crossing_client AS x JOIN unassigned_client AS u USING (organization_id)
        WHERE m.id = x.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        RAISE NOTICE 'tenant integrity: % chat_messages named another organization''s client; moved to an '
            '"Unassigned messages" client of their own organization (see supabase_migrations.tenant_integrity_repairs)',
            v_count;
    END IF;

    -- Messages naming another organization's integration: history kept, as a removed integration leaves it.
    WITH crossing AS (
        SELECT m.id, m.organization_id, m.integration_id
        FROM public.chat_messages AS m JOIN public.messenger_integrations AS i ON i.id = m.integration_id
        WHERE i.organization_id <> m.organization_id
    ), logged AS (
        INSERT INTO supabase_migrations.tenant_integrity_repairs
                (table_name, row_id, organization_id, column_name, original_value)
            SELECT 'chat_messages', id, organization_id, 'integration_id', integration_id FROM crossing
    )
    UPDATE public.chat_messages AS m SET integration_id = NULL FROM crossing WHERE m.id = crossing.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        RAISE NOTICE 'tenant integrity: % chat_messages named another organization''s integration; integration_id '
            'set NULL (see supabase_migrations.tenant_integrity_repairs)', v_count;
    END IF;

    -- Notifications addressed to a user who is not a member of their organization: addressed to no one.
    WITH crossing AS (
        SELECT n.id, n.organization_id, n.user_id
        FROM public.notifications AS n
        WHERE n.user_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM public.profiles AS p WHERE p.id = n.user_id AND p.organization_id = n.organization_id)
    ), logged AS (
        INSERT INTO supabase_migrations.tenant_integrity_repairs
                (table_name, row_id, organization_id, column_name, original_value)
            SELECT 'notifications', id, organization_id, 'user_id', user_id FROM crossing
    )
    UPDATE public.notifications AS n SET user_id = NULL FROM crossing WHERE n.id = crossing.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        RAISE NOTICE 'tenant integrity: % notifications were addressed to a user outside their organization; '
            'user_id set NULL (see supabase_migrations.tenant_integrity_repairs)', v_count;
    END IF;
END
$$;

-- The targets of the composite keys (id alone is already unique; these only let a key name the pair).
ALTER TABLE public.clients ADD CONSTRAINT clients_id_organization_key UNIQUE (id, organization_id);
ALTER TABLE public.messenger_integrations
    ADD CONSTRAINT messenger_integrations_id_organization_key UNIQUE (id, organization_id);
ALTER TABLE public.profiles ADD CONSTRAINT profiles_id_organization_key UNIQUE (id, organization_id);

ALTER TABLE public.chat_messages
    DROP CONSTRAINT chat_messages_client_id_fkey,
    DROP CONSTRAINT chat_messages_integration_id_fkey,
    ADD CONSTRAINT chat_messages_client_fkey FOREIGN KEY (client_id, organization_id)
        REFERENCES public.clients (id, organization_id) ON DELETE CASCADE,
    -- PostgreSQL 15+: a removed integration nulls integration_id only; the message stays in its organization.
    ADD CONSTRAINT chat_messages_integration_fkey FOREIGN KEY (integration_id, organization_id)
        REFERENCES public.messenger_integrations (id, organization_id) ON DELETE SET NULL (integration_id);

-- Deleting a user deletes their profile (auth.users cascades to it), which deletes their notifications, as the
-- key to auth.users did; a notification with no user_id is the organization's and is not checked.
ALTER TABLE public.notifications
    DROP CONSTRAINT notifications_user_id_fkey,
    ADD CONSTRAINT notifications_user_fkey FOREIGN KEY (user_id, organization_id)
        REFERENCES public.profiles (id, organization_id) ON DELETE CASCADE;

-- A user leaving an organization (moved by an administrator, or the organization deleted and the profile's
-- organization_id set NULL) leaves their notifications there, addressed to no one; without this the key above
-- would refuse the move, and deleting an organization with addressed notifications would fail.
CREATE FUNCTION public.detach_notifications_of_leaving_user() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = public
AS $$
BEGIN
    UPDATE notifications SET user_id = NULL WHERE user_id = OLD.id AND organization_id = OLD.organization_id;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION public.detach_notifications_of_leaving_user() FROM PUBLIC, anon, authenticated;

CREATE TRIGGER profiles_detach_notifications BEFORE UPDATE OF organization_id ON public.profiles
    FOR EACH ROW WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id AND OLD.organization_id IS NOT NULL)
    EXECUTE FUNCTION public.detach_notifications_of_leaving_user();
