"""The Telegram wing: the only package outside the sandbox that imports Telethon (accounts, login, sending, updates)."""
