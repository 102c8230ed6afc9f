"""The webhook wing: incoming events into the outbox (listener), out of it to the registered webhooks (worker)."""
