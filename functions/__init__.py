"""The Python port of the CRM's Supabase edge functions for Telegram messaging."""
