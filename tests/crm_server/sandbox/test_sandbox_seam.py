"""The seam: install/uninstall swap the sender class Telethon builds from, and a changed Telethon fails loudly."""

from __future__ import annotations

import pytest
from telethon import TelegramClient
from telethon.client import telegrambaseclient
from telethon.network import MTProtoSender
from telethon.sessions import StringSession

from crm_server.sandbox import (
    SandboxWorld,
    TelethonShapeError,
    check_telethon_shape,
    install,
    installed_world,
    uninstall,
)
from crm_server.sandbox.sender import SandboxSender


def test_telethon_has_the_shape_the_seam_relies_on():
    check_telethon_shape()


def test_shape_check_names_a_missing_sender_member(monkeypatch):
    monkeypatch.delattr(MTProtoSender, "_store_own_updates")

    with pytest.raises(TelethonShapeError, match="_store_own_updates"):
        check_telethon_shape()


def test_shape_check_notices_a_new_required_sender_parameter(monkeypatch):
    def changed_init(
        self,
        auth_key,
        *,
        loggers,
        transport,
        retries=5,
        delay=1,
        auto_reconnect=True,
        connect_timeout=None,
        auth_key_callback=None,
        updates_queue=None,
        auto_reconnect_callback=None,
    ):
        pass

    monkeypatch.setattr(MTProtoSender, "__init__", changed_init)

    with pytest.raises(TelethonShapeError, match="transport"):
        check_telethon_shape()


def test_install_swaps_the_sender_and_uninstall_restores_it():
    with SandboxWorld() as world:
        install(world)
        try:
            sandboxed = TelegramClient(StringSession(), 1, "x")
            assert isinstance(sandboxed._sender, SandboxSender)
            assert installed_world() is world
        finally:
            uninstall()

        real = TelegramClient(StringSession(), 1, "x")
        assert telegrambaseclient.MTProtoSender is MTProtoSender
        assert isinstance(real._sender, MTProtoSender)
        assert installed_world() is None
