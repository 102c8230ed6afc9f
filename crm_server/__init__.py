"""The self-hosted Telegram server: many Telethon accounts behind an HTTP API."""
