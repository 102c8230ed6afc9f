-- Demo data for the local stack: one organization, its admin user, two clients.
INSERT INTO public.organizations (id, name)
VALUES ('00000000-0000-4000-8000-000000000001', 'Demo Organization')
ON CONFLICT (id) DO NOTHING;

-- No password here: `tgcrm up` generates one on the first start and prints it as DEMO_USER_PASSWORD.
INSERT INTO auth.users (id, email, aud, role, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
VALUES ('00000000-0000-4000-8000-0000000000a1', 'admin@demo.local', 'authenticated', 'authenticated', now(),
        '{"provider": "email", "providers": ["email"]}', '{}')
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.profiles (id, organization_id, full_name)
VALUES ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 'Demo Admin')
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.clients (id, organization_id, name, phone, telegram_username)
VALUES
    ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-000000000001', 'Ivan Petrov', '+79990000001', 'ivan_petrov'),
    ('00000000-0000-4000-8000-0000000000c2', '00000000-0000-4000-8000-000000000001', 'Maria Smirnova', '+79990000002', NULL)
ON CONFLICT (id) DO NOTHING;
