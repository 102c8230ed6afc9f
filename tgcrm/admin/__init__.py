"""The admin page: Telegram integrations, account login, clients and chats, for an organization's admin."""
