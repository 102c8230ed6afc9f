-- The private `chat-media` bucket for files of chat messages, kept per organization: objects live under
-- `<organization_id>/...`; the organization's users read them; only the service role (the functions) writes, except
-- that a user may upload under `<organization_id>/uploads/<their user id>/...` of their own organization.
-- Written for hosted Supabase (storage schema, auth.uid(), storage.foldername) and the local stack alike.

INSERT INTO storage.buckets (id, name, public)
VALUES ('chat-media', 'chat-media', false)
ON CONFLICT (id) DO NOTHING;

-- The service role bypasses RLS, so it needs no policy; users get exactly these two.
CREATE POLICY chat_media_organization_read ON storage.objects
    FOR SELECT TO authenticated
    USING (bucket_id = 'chat-media'
           AND (storage.foldername(name))[1] = public.current_organization_id()::text);

CREATE POLICY chat_media_own_uploads_insert ON storage.objects
    FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'chat-media'
                AND (storage.foldername(name))[1] = public.current_organization_id()::text
                AND (storage.foldername(name))[2] = 'uploads'
                AND (storage.foldername(name))[3] = auth.uid()::text);
