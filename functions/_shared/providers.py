"""The messaging providers a Telegram integration can use and the admin form each needs.

Served as JSON by `GET /functions/v1/telegram-providers` so the admin page renders the form from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

InputType = Literal["text", "url", "password", "tel"]


class LocalizedText(BaseModel):
    en: str
    ru: str


class ProviderField(BaseModel):
    """One input of the admin form; `key` is the request field of telegram-crm-connect or the settings key."""

    key: str
    label: LocalizedText
    inputType: InputType
    required: bool
    placeholder: str
    help: LocalizedText
    secret: bool = False
    providers: list[str]


class ProviderInfo(BaseModel):
    key: str
    label: LocalizedText
    description: LocalizedText
    # The function the admin page calls to connect an integration of this provider (None: saved as settings).
    connectFunction: str | None
    fields: list[ProviderField]


def _text(en: str, ru: str) -> LocalizedText:
    return LocalizedText(en=en, ru=ru)


TELEGRAM_CRM = ProviderInfo(
    key="telegram_crm",
    label=_text("Own Telegram server", "Собственный Telegram-сервер"),
    description=_text(
        "A personal Telegram account connected through your self-hosted CRM server.",
        "Личный аккаунт Telegram, подключённый через ваш CRM-сервер.",
    ),
    connectFunction="telegram-crm-connect",
    fields=[
        ProviderField(
            key="crmApiUrl", label=_text("Server URL", "Адрес сервера"), inputType="url", required=True,
            placeholder="https://crm-telegram.example.com",
            help=_text("The address of your CRM Telegram server (https).",
                       "Адрес вашего CRM Telegram-сервера (https)."),
            providers=["telegram_crm"],
        ),
        ProviderField(
            key="crmApiKey", label=_text("API key", "API-ключ"), inputType="password", required=True,
            placeholder="tgcrm_…", secret=True,
            help=_text("The key `tgcrm keys create --project <organization id>` printed.",
                       "Ключ, который напечатала команда `tgcrm keys create --project <id организации>`."),
            providers=["telegram_crm"],
        ),
        ProviderField(
            key="crmPhoneNumber", label=_text("Telegram phone", "Телефон Telegram"), inputType="tel",
            required=True, placeholder="+79990000000",
            help=_text("The phone number of the Telegram account, in international format.",
                       "Номер телефона аккаунта Telegram в международном формате."),
            providers=["telegram_crm"],
        ),
        ProviderField(
            key="name", label=_text("Name", "Название"), inputType="text", required=False,
            placeholder="Sales", help=_text("Shown to managers when they choose an account.",
                                            "Видно менеджерам при выборе аккаунта."),
            providers=["telegram_crm"],
        ),
    ],
)

WAPPI = ProviderInfo(
    key="wappi",
    label=_text("Wappi.pro", "Wappi.pro"),
    description=_text(
        "A personal Telegram account connected through the Wappi.pro cloud gateway.",
        "Личный аккаунт Telegram, подключённый через облачный шлюз Wappi.pro.",
    ),
    connectFunction=None,
    fields=[
        ProviderField(
            key="profileId", label=_text("Profile ID", "ID профиля"), inputType="text", required=True,
            placeholder="a1b2c3d4-e5f6",
            help=_text("The profile id of the Telegram account in your Wappi.pro dashboard.",
                       "ID профиля аккаунта Telegram в личном кабинете Wappi.pro."),
            providers=["wappi"],
        ),
        ProviderField(
            key="apiToken", label=_text("API token", "API-токен"), inputType="password", required=True,
            placeholder="••••••••", secret=True,
            help=_text("The API token from Wappi.pro's settings page.", "API-токен со страницы настроек Wappi.pro."),
            providers=["wappi"],
        ),
        ProviderField(
            key="name", label=_text("Name", "Название"), inputType="text", required=False,
            placeholder="Support", help=_text("Shown to managers when they choose an account.",
                                              "Видно менеджерам при выборе аккаунта."),
            providers=["wappi"],
        ),
    ],
)

PROVIDERS: dict[str, ProviderInfo] = {provider.key: provider for provider in (TELEGRAM_CRM, WAPPI)}


def providers_document() -> dict[str, object]:
    return {"success": True, "providers": [provider.model_dump() for provider in PROVIDERS.values()]}
