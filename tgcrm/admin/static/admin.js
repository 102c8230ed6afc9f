// The admin page: plain JavaScript, no build step, talking only to its own origin:
// /auth/v1 to sign in (email + password, as Supabase Auth), /rest/v1 with the user's JWT (RLS applies) and
// /functions/v1 for everything that needs an integration's secrets.
'use strict';

(() => {
  const I18N = {
    en: {
      admin: 'Admin', sandboxMode: 'Sandbox', loading: 'Loading…', signOut: 'Sign out',
      signInTitle: 'Sign in', localSignInHint: "Local mode: sign in as the demo organization's admin.",
      signInDemo: 'Sign in as the demo user', tokenLabel: 'Supabase access token (JWT)',
      signInToken: 'Sign in with this token', tokenInvalid: 'This is not a valid, unexpired access token.',
      emailLabel: 'Email', accountPasswordLabel: 'Password', signInPassword: 'Sign in',
      credentialsRequired: 'Type your email and password.', credentialsInvalid: 'Wrong email or password.',
      emailNotConfirmed: 'This email is not confirmed yet.',
      integrations: 'Telegram integrations', refresh: 'Refresh', addIntegration: 'Add integration',
      colName: 'Name', colProvider: 'Provider', colPrimary: 'Primary', colEnabled: 'Enabled', colStatus: 'Status',
      noIntegrations: 'No integrations yet: add one to connect a Telegram account.',
      newIntegration: 'New integration', provider: 'Provider', connect: 'Connect', save: 'Save', cancel: 'Cancel',
      loginTitle: 'Log the Telegram account in', sendCode: 'Send login code', codeLabel: 'Code from Telegram',
      signInStep: 'Sign in', passwordLabel: 'Two-step verification password', confirm: 'Confirm',
      loginDone: 'The account is logged in.', close: 'Close',
      codeSent: 'A login code was sent to the Telegram app of {phone}.',
      codeSentSandbox: 'Sandbox: the login code is always 12345.',
      passwordNeeded: 'This account has two-step verification: enter its password.',
      sandboxTitle: 'Sandbox: a simulated user writes',
      sandboxHint: 'Offline Telegram: make someone write to a connected account, as if from their phone.',
      sandboxAccount: 'To the account', sandboxFrom: 'From', sandboxPhone: 'Their phone', sandboxName: 'Their name',
      sandboxText: 'Message', sandboxTextPlaceholder: 'Hello! Is the offer still valid?',
      sandboxSend: 'Write to the account', sandboxNewPerson: 'Someone new…',
      sandboxNoAccount: 'Connect an integration with your own Telegram server first.',
      sandboxSent: 'The simulated user wrote; the message appears in the chat once the Telegram server delivers it.',
      clients: 'Clients', noClients: 'No clients yet.', chat: 'Chat',
      pickClient: 'Choose a client to see the conversation.', noMessages: 'No messages with this client yet.',
      replyPlaceholder: 'Write a reply…', send: 'Send',
      attach: 'Attach a file', removeFile: 'Remove the file', fileTooLarge: 'The file is larger than {size}.',
      fileMissing: 'File not received', fileTooLargeReceived: 'File not received: larger than the server accepts',
      fileUnavailable: 'File not received: Telegram did not give it', uploading: 'Uploading the file…',
      openFile: 'Open', sandboxFile: 'File (optional)',
      primary: 'Primary', makePrimary: 'Make primary', logIn: 'Log in', remove: 'Remove',
      enable: 'Enable', disable: 'Disable',
      confirmRemove: 'Remove the integration "{name}"? Its messages stay in the chats.',
      confirmLogout: 'Also log this Telegram account out of the server? (OK: log out; Cancel: keep it logged in)',
      stateAuthorized: 'Logged in', stateNotAuthorized: 'Not logged in', stateNotOnServer: 'Not on the server',
      stateError: 'Server error', stateNotChecked: 'Not checked', stateUnknown: 'Checking…',
      connected: 'connected', disconnected: 'disconnected',
      deliveries: 'incoming: {pending} waiting, {failed} failed',
      deliveryPaused: 'paused while disabled: messages wait',
      required: 'Required', invalidPhone: 'Enter a phone number in international format, e.g. +79990000000',
      invalidUrl: 'Enter a URL starting with https:// (http:// only for a local server)',
      connectedOk: 'Integration saved.', needsLogin: 'Now log the Telegram account in.',
      sessionExpired: 'Your session has expired: sign in again.',
      outgoing: 'you', failed: 'failed', sending: 'sending…', notSent: 'not sent', retry: 'Retry', discard: 'Discard',
      fromTelegramApp: 'from the Telegram app', edited: 'edited', editedFrom: 'Before the edit: {text}',
      deleted: 'deleted', tickSent: 'Sent', tickRead: 'Read',
      accountReported: 'Telegram said: {state}', accountReportedReason: 'Telegram said: {state} ({reason})',
      codeDigitsOnly: 'The code has digits only: type the digits Telegram sent, e.g. 12345.',
    },
    ru: {
      admin: 'Администрирование', sandboxMode: 'Песочница', loading: 'Загрузка…', signOut: 'Выйти',
      signInTitle: 'Вход', localSignInHint: 'Локальный режим: войти как администратор демо-организации.',
      signInDemo: 'Войти как демо-пользователь', tokenLabel: 'Токен доступа Supabase (JWT)',
      signInToken: 'Войти с этим токеном', tokenInvalid: 'Это недействительный или просроченный токен.',
      emailLabel: 'Эл. почта', accountPasswordLabel: 'Пароль', signInPassword: 'Войти',
      credentialsRequired: 'Введите почту и пароль.', credentialsInvalid: 'Неверная почта или пароль.',
      emailNotConfirmed: 'Эта почта ещё не подтверждена.',
      integrations: 'Интеграции Telegram', refresh: 'Обновить', addIntegration: 'Добавить интеграцию',
      colName: 'Название', colProvider: 'Провайдер', colPrimary: 'Основная', colEnabled: 'Включена',
      colStatus: 'Состояние',
      noIntegrations: 'Интеграций пока нет: добавьте одну, чтобы подключить аккаунт Telegram.',
      newIntegration: 'Новая интеграция', provider: 'Провайдер', connect: 'Подключить', save: 'Сохранить',
      cancel: 'Отмена',
      loginTitle: 'Вход в аккаунт Telegram', sendCode: 'Отправить код', codeLabel: 'Код из Telegram',
      signInStep: 'Войти', passwordLabel: 'Пароль двухэтапной проверки', confirm: 'Подтвердить',
      loginDone: 'Вход в аккаунт выполнен.', close: 'Закрыть',
      codeSent: 'Код входа отправлен в приложение Telegram номера {phone}.',
      codeSentSandbox: 'Песочница: код входа всегда 12345.',
      passwordNeeded: 'У аккаунта включена двухэтапная проверка: введите пароль.',
      sandboxTitle: 'Песочница: пишет симулированный пользователь',
      sandboxHint: 'Офлайн-Telegram: пусть кто-нибудь напишет подключённому аккаунту, как со своего телефона.',
      sandboxAccount: 'Аккаунту', sandboxFrom: 'От кого', sandboxPhone: 'Его телефон', sandboxName: 'Его имя',
      sandboxText: 'Сообщение', sandboxTextPlaceholder: 'Здравствуйте! Предложение ещё в силе?',
      sandboxSend: 'Написать аккаунту', sandboxNewPerson: 'Новый человек…',
      sandboxNoAccount: 'Сначала подключите интеграцию с собственным Telegram-сервером.',
      sandboxSent: 'Пользователь написал; сообщение появится в чате, когда Telegram-сервер его доставит.',
      clients: 'Клиенты', noClients: 'Клиентов пока нет.', chat: 'Чат',
      pickClient: 'Выберите клиента, чтобы увидеть переписку.', noMessages: 'С этим клиентом ещё нет сообщений.',
      replyPlaceholder: 'Напишите ответ…', send: 'Отправить',
      attach: 'Прикрепить файл', removeFile: 'Убрать файл', fileTooLarge: 'Файл больше {size}.',
      fileMissing: 'Файл не получен', fileTooLargeReceived: 'Файл не получен: больше, чем принимает сервер',
      fileUnavailable: 'Файл не получен: Telegram его не отдал', uploading: 'Загружаем файл…',
      openFile: 'Открыть', sandboxFile: 'Файл (необязательно)',
      primary: 'Основная', makePrimary: 'Сделать основной', logIn: 'Войти', remove: 'Удалить',
      enable: 'Включить', disable: 'Выключить',
      confirmRemove: 'Удалить интеграцию «{name}»? Сообщения в чатах останутся.',
      confirmLogout: 'Заодно выйти из этого аккаунта Telegram на сервере? (OK — выйти, Отмена — оставить вход)',
      stateAuthorized: 'Вход выполнен', stateNotAuthorized: 'Вход не выполнен', stateNotOnServer: 'Нет на сервере',
      stateError: 'Ошибка сервера', stateNotChecked: 'Не проверяется', stateUnknown: 'Проверка…',
      connected: 'на связи', disconnected: 'нет связи',
      deliveries: 'входящие: ждут {pending}, ошибок {failed}',
      deliveryPaused: 'на паузе, пока выключена: сообщения ждут',
      required: 'Обязательное поле', invalidPhone: 'Введите номер в международном формате, например +79990000000',
      invalidUrl: 'Введите адрес, начинающийся с https:// (http:// только для локального сервера)',
      connectedOk: 'Интеграция сохранена.', needsLogin: 'Теперь войдите в аккаунт Telegram.',
      sessionExpired: 'Сессия истекла: войдите снова.',
      outgoing: 'вы', failed: 'ошибка', sending: 'отправляется…', notSent: 'не отправлено', retry: 'Повторить',
      discard: 'Убрать',
      fromTelegramApp: 'из приложения Telegram', edited: 'изменено', editedFrom: 'До изменения: {text}',
      deleted: 'удалено', tickSent: 'Отправлено', tickRead: 'Прочитано',
      accountReported: 'Telegram сообщил: {state}', accountReportedReason: 'Telegram сообщил: {state} ({reason})',
      codeDigitsOnly: 'Код состоит только из цифр: введите цифры, которые прислал Telegram, например 12345.',
    },
  };

  // What a manager reads when something fails: a sentence per error `code` of the functions' JSON error body
  // (functions/_shared/errors.py), a few worded for where they appear (`contexts`), a sentence per field for
  // VALIDATION_ERROR, and a generic one per class of failure for any code not listed. Never the server's own message,
  // an HTTP status or the name of one of our parts.
  const ERRORS = {
    en: {
      codes: {
        INTERNAL_ERROR: 'Something went wrong on the server. Try again in a moment.',
        INVALID_JSON: 'The server could not read what the page sent. Reload the page and try again.',
        VALIDATION_ERROR: 'Some of the entered data is not valid. Check it and try again.',
        IDEMPOTENCY_KEY_REUSED: 'This message was already sent to another client, so it was not sent again.',
        PAYLOAD_TOO_LARGE: 'This is too large to send.',
        FUNCTION_NOT_FOUND: 'This action is not available on this server.',
        METHOD_NOT_ALLOWED: 'This action is not available on this server.',
        NOT_FOUND: 'This is not available here. Reload the page and try again.',
        HOST_NOT_ALLOWED: 'Open this page at the address the local stack printed when it started.',
        ORIGIN_NOT_ALLOWED: 'Another site tried to use this page. Open the page at the address the local stack '
          + 'printed.',
        UNAUTHORIZED: 'Your session has expired: sign in again.',
        INVALID_TOKEN: 'Your session has expired: sign in again.',
        ORGANIZATION_NOT_FOUND: 'Your user does not belong to an organization yet. Ask an administrator to add you.',
        INVALID_SECRET: 'The Telegram server could not prove who it is. Connect the integration again.',
        INVALID_METRICS_KEY: 'The metrics key is missing or wrong.',
        INVALID_SIGNATURE: 'The Telegram server could not prove who it is. Connect the integration again.',
        PROJECT_MISMATCH: 'The Telegram server is set up for another organization. Connect the integration again.',
        PROJECT_FORBIDDEN: 'This API key belongs to another organization. Use the key made for yours.',
        INTEGRATION_NOT_FOUND: 'This integration no longer exists. Reload the page.',
        INTEGRATION_DISABLED: 'This integration is disabled. Enable it under Telegram integrations and try again.',
        INTEGRATION_MISCONFIGURED: "This integration's settings are incomplete. Connect it again.",
        CLIENT_NOT_FOUND: 'This client no longer exists. Reload the client list.',
        CLIENT_HAS_NO_TELEGRAM: 'This client has no Telegram username, phone or chat to write to. Add one first.',
        PROVIDER_ERROR: 'The messaging service failed. Try again in a moment.',
        RECIPIENT_NOT_FOUND: "Telegram cannot find this client by their username or phone. Check the client's details.",
        CRM_SERVER_UNREACHABLE: 'The Telegram server could not be reached. Try again in a moment.',
        CRM_SERVER_ADDRESS_NOT_ALLOWED: 'This server address cannot be used: it must be a public https:// address (or '
          + 'one your administrator allowed).',
        CRM_SERVER_ERROR: 'The Telegram server answered with an error. Try again in a moment.',
        CRM_SERVER_AUTH_FAILED: 'The Telegram server refused the API key. Connect the integration again with a '
          + 'valid key.',
        ACCOUNT_NOT_FOUND: 'The Telegram account of this integration is not on its server. Connect it again.',
        ACCOUNT_NOT_AUTHORIZED: 'The Telegram account is not logged in. Log it in under Telegram integrations.',
        INVALID_PHONE: 'Telegram does not accept this phone number. Check it and try again.',
        RECIPIENT_PRIVACY: "The client's Telegram privacy settings do not allow messages from this account.",
        FLOOD_WAIT: 'Telegram asks this account to wait before sending again. Try again later.',
        FLOOD_WAIT_SECONDS: 'Telegram asks this account to wait before sending again. Try again in {wait}.',
        RATE_LIMITED: 'This account is sending too fast. Wait a little and try again.',
        TELEGRAM_ERROR: 'Telegram answered with an error. Try again in a moment.',
        ACCOUNT_DISCONNECTED: 'The Telegram account is offline right now. Try again shortly.',
        IDEMPOTENCY_IN_PROGRESS: 'This message is still being sent. Wait a moment, then try again.',
        SEND_OUTCOME_UNKNOWN: 'The messaging service did not confirm this message, so it may have been sent. Retry: '
          + "it is never sent twice; if it still fails, check the client's chat in Telegram.",
        EARLIER_SEND_UNKNOWN: "This message may already have been sent, and it is not sent again. Check the client's "
          + 'chat in Telegram, and send it as a new message if it is missing.',
        REGISTRATION_NOT_FOUND: 'This Telegram account is not connected to the CRM on its server. Connect the '
          + 'integration again.',
        INVALID_CODE: 'The code is wrong or has expired. Check it, or request a new code.',
        PASSWORD_INVALID: 'The password is wrong. Try again.',
        LOGIN_NOT_STARTED: 'The login has expired. Request a new code.',
        WAPPI_ERROR: 'Wappi.pro answered with an error. Try again in a moment.',
        WAPPI_UNREACHABLE: 'Wappi.pro could not be reached. Try again in a moment.',
        WAPPI_AUTH_FAILED: 'Wappi.pro refused the API token. Save the integration again with a valid token.',
        DATABASE_ERROR: 'The database is not available right now. Try again in a moment.',
        SETTINGS_KEY_MISMATCH: "The integration's saved secrets cannot be opened on this server. Ask your "
          + 'administrator.',
        MESSAGE_NOT_STORED: 'The message was sent but not saved. Try again: it will be saved without being sent twice.',
        MEDIA_FETCH_FAILED: 'The file could not be fetched from the Telegram server. It will be tried again.',
        MEDIA_MISMATCH: 'The file arrived damaged. It will be tried again.',
        MEDIA_STORE_FAILED: 'The file could not be saved right now. Try again in a moment.',
        MEDIA_TOO_LARGE_FOR_STORAGE: 'This file is larger than the file storage accepts.',
        FILE_FORBIDDEN: 'This file belongs to another organization and cannot be sent.',
        FILE_NOT_FOUND: 'This file is no longer in the file storage. Attach it again.',
        FILE_TOO_LARGE: 'This file is too large to send. Send a smaller one, or a link to it.',
        FILE_UNAVAILABLE: 'The file could not be fetched for sending. Attach it again.',
      },
      contexts: {
        send: {
          INTEGRATION_NOT_FOUND: 'No Telegram account is enabled to send from. Enable or connect one under Telegram '
            + 'integrations, then retry.',
          INTEGRATION_DISABLED: 'The Telegram account for this chat is disabled. Enable it under Telegram '
            + 'integrations, then retry.',
          ACCOUNT_NOT_AUTHORIZED: 'The Telegram account is not logged in. Log it in under Telegram integrations, '
            + 'then retry.',
          MESSAGE_NOT_STORED: 'The message was sent but not saved. Retry to save it: it is never sent twice.',
          INTERRUPTED: 'The page was closed while this message was being sent. Retry: it is never sent twice.',
          fallback: {
            network: 'The server could not be reached. Check the connection and retry: it is never sent twice.',
            refused: 'The server refused this message. Check it and retry.',
            server: 'The server failed or did not answer, so this may not have been sent. Retry: it is never sent '
              + 'twice.',
          },
        },
      },
      fields: {
        crmApiUrl: 'Enter the server address, starting with https:// (http:// only for a server on this computer).',
        crmApiKey: 'Enter the API key your Telegram server printed for your organization.',
        crmPhoneNumber: 'Enter a phone number in international format, e.g. +79990000000',
        profileId: 'Enter the profile ID from your Wappi.pro dashboard.',
        apiToken: 'Enter the API token from Wappi.pro.',
        code: 'Enter the login code Telegram sent.',
        password: 'Enter the two-step verification password.',
        text: 'The message is empty or too long.',
        fromPhone: 'Enter a phone number in international format, e.g. +79990000000',
      },
      fallback: {
        network: 'The server could not be reached. Check the connection and try again.',
        refused: 'The server refused this request. Check what you entered and try again.',
        server: 'Something went wrong on the server. Try again in a moment.',
      },
      seconds: '{n} s', minutes: 'about {n} min',
    },
    ru: {
      codes: {
        INTERNAL_ERROR: 'На сервере что-то пошло не так. Попробуйте ещё раз чуть позже.',
        INVALID_JSON: 'Сервер не смог прочитать запрос страницы. Обновите страницу и попробуйте снова.',
        VALIDATION_ERROR: 'Часть введённых данных неверна. Проверьте их и попробуйте снова.',
        IDEMPOTENCY_KEY_REUSED: 'Это сообщение уже отправлено другому клиенту, поэтому повторно не отправлено.',
        PAYLOAD_TOO_LARGE: 'Это слишком большой объём для отправки.',
        FUNCTION_NOT_FOUND: 'Это действие недоступно на этом сервере.',
        METHOD_NOT_ALLOWED: 'Это действие недоступно на этом сервере.',
        NOT_FOUND: 'Здесь это недоступно. Обновите страницу и попробуйте снова.',
        HOST_NOT_ALLOWED: 'Откройте страницу по адресу, который локальный стек напечатал при запуске.',
        ORIGIN_NOT_ALLOWED: 'Другой сайт попытался воспользоваться этой страницей. Откройте её по адресу, который '
          + 'напечатал локальный стек.',
        UNAUTHORIZED: 'Сессия истекла: войдите снова.',
        INVALID_TOKEN: 'Сессия истекла: войдите снова.',
        ORGANIZATION_NOT_FOUND: 'Ваш пользователь ещё не входит ни в одну организацию. Попросите администратора '
          + 'добавить вас.',
        INVALID_SECRET: 'Telegram-сервер не смог подтвердить, что это он. Подключите интеграцию заново.',
        INVALID_METRICS_KEY: 'Ключ метрик не указан или неверен.',
        INVALID_SIGNATURE: 'Telegram-сервер не смог подтвердить, что это он. Подключите интеграцию заново.',
        PROJECT_MISMATCH: 'Telegram-сервер настроен для другой организации. Подключите интеграцию заново.',
        PROJECT_FORBIDDEN: 'Этот API-ключ принадлежит другой организации. Используйте ключ, выданный для вашей.',
        INTEGRATION_NOT_FOUND: 'Этой интеграции больше нет. Обновите страницу.',
        INTEGRATION_DISABLED: 'Интеграция выключена. Включите её в разделе «Интеграции Telegram» и попробуйте снова.',
        INTEGRATION_MISCONFIGURED: 'Настройки интеграции неполные. Подключите её заново.',
        CLIENT_NOT_FOUND: 'Этого клиента больше нет. Обновите список клиентов.',
        CLIENT_HAS_NO_TELEGRAM: 'У клиента нет имени пользователя, телефона или чата в Telegram. Сначала добавьте их.',
        PROVIDER_ERROR: 'Сервис сообщений не сработал. Попробуйте ещё раз чуть позже.',
        RECIPIENT_NOT_FOUND: 'Telegram не находит клиента по имени пользователя или телефону. Проверьте данные '
          + 'клиента.',
        CRM_SERVER_UNREACHABLE: 'Telegram-сервер недоступен. Попробуйте ещё раз чуть позже.',
        CRM_SERVER_ADDRESS_NOT_ALLOWED: 'Этот адрес сервера использовать нельзя: нужен публичный адрес https:// (или '
          + 'адрес, разрешённый администратором).',
        CRM_SERVER_ERROR: 'Telegram-сервер ответил ошибкой. Попробуйте ещё раз чуть позже.',
        CRM_SERVER_AUTH_FAILED: 'Telegram-сервер не принял API-ключ. Подключите интеграцию заново с верным ключом.',
        ACCOUNT_NOT_FOUND: 'Аккаунта Telegram этой интеграции нет на её сервере. Подключите его заново.',
        ACCOUNT_NOT_AUTHORIZED: 'Вход в аккаунт Telegram не выполнен. Войдите в разделе «Интеграции Telegram».',
        INVALID_PHONE: 'Telegram не принимает этот номер телефона. Проверьте его и попробуйте снова.',
        RECIPIENT_PRIVACY: 'Настройки приватности клиента в Telegram не разрешают сообщения от этого аккаунта.',
        FLOOD_WAIT: 'Telegram просит этот аккаунт подождать с отправкой. Попробуйте позже.',
        FLOOD_WAIT_SECONDS: 'Telegram просит этот аккаунт подождать с отправкой. Попробуйте через {wait}.',
        RATE_LIMITED: 'Аккаунт отправляет слишком часто. Подождите немного и попробуйте снова.',
        TELEGRAM_ERROR: 'Telegram ответил ошибкой. Попробуйте ещё раз чуть позже.',
        ACCOUNT_DISCONNECTED: 'Аккаунт Telegram сейчас не в сети. Попробуйте чуть позже.',
        IDEMPOTENCY_IN_PROGRESS: 'Это сообщение ещё отправляется. Подождите немного и попробуйте снова.',
        SEND_OUTCOME_UNKNOWN: 'Сервис сообщений не подтвердил отправку, поэтому сообщение могло уйти. Повторите — '
          + 'дважды оно не отправится; если ошибка повторится, проверьте чат клиента в Telegram.',
        EARLIER_SEND_UNKNOWN: 'Это сообщение, возможно, уже отправлено, и повторно оно не уйдёт. Проверьте чат клиента '
          + 'в Telegram и, если его там нет, отправьте как новое сообщение.',
        REGISTRATION_NOT_FOUND: 'Этот аккаунт Telegram не подключён к CRM на своём сервере. Подключите интеграцию '
          + 'заново.',
        INVALID_CODE: 'Код неверный или устарел. Проверьте его или запросите новый.',
        PASSWORD_INVALID: 'Неверный пароль. Попробуйте снова.',
        LOGIN_NOT_STARTED: 'Время входа истекло. Запросите новый код.',
        WAPPI_ERROR: 'Wappi.pro ответил ошибкой. Попробуйте ещё раз чуть позже.',
        WAPPI_UNREACHABLE: 'Wappi.pro недоступен. Попробуйте ещё раз чуть позже.',
        WAPPI_AUTH_FAILED: 'Wappi.pro не принял API-токен. Сохраните интеграцию заново с верным токеном.',
        DATABASE_ERROR: 'База данных сейчас недоступна. Попробуйте ещё раз чуть позже.',
        SETTINGS_KEY_MISMATCH: 'Сохранённые секреты интеграции нельзя открыть на этом сервере. Обратитесь к '
          + 'администратору.',
        MESSAGE_NOT_STORED: 'Сообщение отправлено, но не сохранено. Попробуйте снова: оно сохранится без повторной '
          + 'отправки.',
        MEDIA_FETCH_FAILED: 'Не удалось получить файл с сервера Telegram. Попытка будет повторена.',
        MEDIA_MISMATCH: 'Файл пришёл повреждённым. Попытка будет повторена.',
        MEDIA_STORE_FAILED: 'Сейчас не удалось сохранить файл. Попробуйте ещё раз чуть позже.',
        MEDIA_TOO_LARGE_FOR_STORAGE: 'Этот файл больше, чем принимает хранилище файлов.',
        FILE_FORBIDDEN: 'Этот файл принадлежит другой организации, его нельзя отправить.',
        FILE_NOT_FOUND: 'Этого файла больше нет в хранилище. Прикрепите его заново.',
        FILE_TOO_LARGE: 'Файл слишком большой для отправки. Отправьте файл поменьше или ссылку на него.',
        FILE_UNAVAILABLE: 'Не удалось получить файл для отправки. Прикрепите его снова.',
      },
      contexts: {
        send: {
          INTEGRATION_NOT_FOUND: 'Нет включённого аккаунта Telegram для отправки. Включите или подключите его в '
            + 'разделе «Интеграции Telegram» и повторите.',
          INTEGRATION_DISABLED: 'Аккаунт Telegram этого чата выключен. Включите его в разделе «Интеграции Telegram» '
            + 'и повторите.',
          ACCOUNT_NOT_AUTHORIZED: 'Вход в аккаунт Telegram не выполнен. Войдите в разделе «Интеграции Telegram» и '
            + 'повторите.',
          MESSAGE_NOT_STORED: 'Сообщение отправлено, но не сохранено. Повторите, чтобы сохранить: дважды оно не '
            + 'уйдёт.',
          INTERRUPTED: 'Страницу закрыли во время отправки. Повторите: дважды сообщение не уйдёт.',
          fallback: {
            network: 'Сервер недоступен. Проверьте связь и повторите: дважды сообщение не уйдёт.',
            refused: 'Сервер не принял это сообщение. Проверьте его и повторите.',
            server: 'Сервер не сработал или не ответил, сообщение могло не уйти. Повторите: дважды оно не уйдёт.',
          },
        },
      },
      fields: {
        crmApiUrl: 'Введите адрес сервера, начинающийся с https:// (http:// только для сервера на этом компьютере).',
        crmApiKey: 'Введите API-ключ, который ваш Telegram-сервер выдал для вашей организации.',
        crmPhoneNumber: 'Введите номер в международном формате, например +79990000000',
        profileId: 'Введите ID профиля из личного кабинета Wappi.pro.',
        apiToken: 'Введите API-токен из Wappi.pro.',
        code: 'Введите код входа, который прислал Telegram.',
        password: 'Введите пароль двухэтапной проверки.',
        text: 'Сообщение пустое или слишком длинное.',
        fromPhone: 'Введите номер в международном формате, например +79990000000',
      },
      fallback: {
        network: 'Сервер недоступен. Проверьте связь и попробуйте снова.',
        refused: 'Сервер отклонил запрос. Проверьте введённые данные и попробуйте снова.',
        server: 'На сервере что-то пошло не так. Попробуйте ещё раз чуть позже.',
      },
      seconds: '{n} с', minutes: 'примерно {n} мин',
    },
  };

  const SESSION_KEY = 'tgcrm-admin-session';
  const LANG_KEY = 'tgcrm-admin-lang';
  const OUTBOX_KEY = 'tgcrm-admin-outbox';
  const POLL_MS = 2500;
  // A session is refreshed this long before its access token expires (supabase-js refreshes with a margin too).
  const REFRESH_MARGIN_MS = 60000;
  const NARROW = window.matchMedia('(max-width: 860px)');

  const state = {
    lang: 'en', config: null, session: null, providers: [], integrations: [], statuses: {}, clients: [],
    clientId: null, clientsSignature: '', messagesSignature: '', messageRows: [], markedRead: {},
    loginIntegrationId: null,
    loginHint: [], notice: null, busy: 0, pollTimer: null, refreshTimer: null, refreshing: null,
    // Replies not yet seen among the stored messages: {key (the Idempotency-Key), clientId, text, at, status:
    // 'sending' | 'failed' | 'sent', error}. A retry resends under the same key, so it can never send twice.
    outbox: [],
  };

  const $ = (id) => document.getElementById(id);

  function t(key, vars) {
    let text = (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;
    for (const [name, value] of Object.entries(vars || {})) text = text.replace(`{${name}}`, String(value));
    return text;
  }

  function localized(value) {
    if (!value) return '';
    if (typeof value === 'string') return value;
    return value[state.lang] || value.en || '';
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // --- talking to the server ----------------------------------------------------------------------------------

  // `message` is the server's own text, for the console only; managers read errorText(error).
  class ApiError extends Error {
    constructor(message, code, field, status, retryAfter) {
      super(message);
      this.code = code;
      this.field = field;
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new ApiError(String(error), null, null, 0, null);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (error) { data = null; }
    }
    if (!response.ok) {
      const body = data && typeof data === 'object' ? data : {};
      const message = body.error || body.message || body.msg || `HTTP ${response.status}`;
      if (response.status === 401 && state.session) expireSession();
      const retryAfter = Number.parseInt(response.headers.get('Retry-After') || '', 10);
      throw new ApiError(message, typeof body.code === 'string' ? body.code : null,
        typeof body.field === 'string' ? body.field : null, response.status,
        Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null);
    }
    return data;
  }

  function authHeaders() {
    const headers = { apikey: state.config.anonKey };
    if (state.session) headers.Authorization = `Bearer ${state.session.token}`;
    return headers;
  }

  function rest(path, { method = 'GET', body, prefer } = {}) {
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (prefer) headers.Prefer = prefer;
    return request(`${state.config.supabaseUrl}/rest/v1/${path}`,
      { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  function callFunction(name, body, method = 'POST', extraHeaders = {}) {
    const headers = { ...authHeaders(), ...extraHeaders };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return request(`${state.config.supabaseUrl}/functions/v1/${name}`,
      { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  // --- progress and messages ------------------------------------------------------------------------------------

  async function withBusy(button, action) {
    state.busy += 1;
    $('busy').hidden = false;
    if (button) { button.disabled = true; button.classList.add('loading'); }
    try {
      return await action();
    } finally {
      state.busy -= 1;
      $('busy').hidden = state.busy === 0;
      if (button) { button.disabled = false; button.classList.remove('loading'); }
    }
  }

  // The banner at the top: `text` is a function, so that switching the language rewords what is shown.
  function showNotice(text, kind) {
    state.notice = { text: typeof text === 'function' ? text : () => text, kind };
    renderNotice();
  }

  function renderNotice() {
    if (!state.notice) { $('notice').hidden = true; return; }
    $('notice-text').textContent = state.notice.text();
    $('notice').className = `notice${state.notice.kind === 'info' ? ' info' : ''}`;
    $('notice').hidden = false;
  }

  function showError(error, context) {
    if (error && !(error instanceof ApiError)) console.error(error);
    showNotice(() => errorText(error, state.lang, context), 'error');
  }

  function clearNotice() {
    state.notice = null;
    renderNotice();
  }

  function fieldError(id, message) {
    const target = $(id);
    if (target) target.textContent = message || '';
  }

  function waitText(seconds, table) {
    if (seconds < 90) return table.seconds.replace('{n}', String(seconds));
    return table.minutes.replace('{n}', String(Math.ceil(seconds / 60)));
  }

  // The sentence a manager reads for a failed request, in `lang`: by the error's code (as worded for `context`,
  // e.g. 'send', when that says more), by the field at fault, or generically by the class of failure.
  function errorText(error, lang, context) {
    const table = ERRORS[lang] || ERRORS.en;
    const code = error && typeof error.code === 'string' ? error.code : null;
    const status = error && Number.isInteger(error.status) ? error.status : 500;
    const wording = (context && table.contexts[context]) || {};
    if (code === 'VALIDATION_ERROR' && error.field && table.fields[error.field]) return table.fields[error.field];
    if (code === 'FLOOD_WAIT' && error.retryAfter) {
      return table.codes.FLOOD_WAIT_SECONDS.replace('{wait}', waitText(error.retryAfter, table));
    }
    if (code && Object.hasOwn(wording, code) && code !== 'fallback') return wording[code];
    if (code && Object.hasOwn(table.codes, code)) return table.codes[code];
    const fallback = wording.fallback || table.fallback;
    if (status === 0) return fallback.network;
    if (status === 401) return table.codes.INVALID_TOKEN;
    return status >= 500 ? fallback.server : fallback.refused;
  }

  // --- session --------------------------------------------------------------------------------------------------

  function tokenClaims(token) {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(decodeURIComponent(escape(atob(payload))));
    } catch (error) {
      return null;
    }
  }

  function tokenUsable(token) {
    const claims = tokenClaims(token);
    return Boolean(claims && claims.sub && (!claims.exp || claims.exp * 1000 > Date.now() + 30000));
  }

  function saveSession(session) {
    state.session = session;
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
    scheduleRefresh();
  }

  // --- Supabase Auth (/auth/v1): email + password, refresh before expiry, sign out -------------------------------

  function auth(path, { body, token } = {}) {
    // The API version supabase-js sends: errors then carry their code as a string (`invalid_credentials`, …).
    const headers = { apikey: state.config.anonKey, 'Content-Type': 'application/json',
      'X-Supabase-Api-Version': '2024-01-01' };
    if (token) headers.Authorization = `Bearer ${token}`;
    return request(`${state.config.supabaseUrl}/auth/v1/${path}`,
      { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  // Locally, the demo user's integration form is prefilled with the local crm_server and its key, however they signed
  // in; anywhere else (or for another user) there is nothing to prefill.
  async function localCrmDefaults(token) {
    if (!state.config.localSignIn) return null;
    try {
      const answer = await request('local/crm-defaults', { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
      return answer.crmDefaults || null;
    } catch (error) { return null; }
  }

  function sessionFromAuth(answer, crmDefaults) {
    return { token: answer.access_token, refreshToken: answer.refresh_token, expiresAt: answer.expires_at,
      userId: answer.user.id, email: answer.user.email, crmDefaults: crmDefaults || null };
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    const session = state.session;
    if (!session || !session.refreshToken || !session.expiresAt) return;
    const delay = Math.max(0, session.expiresAt * 1000 - Date.now() - REFRESH_MARGIN_MS);
    state.refreshTimer = setTimeout(refreshSession, delay);
  }

  // One refresh at a time: each refresh token is good once, so a second request with it would end the session.
  function refreshSession() {
    if (!state.refreshing) {
      state.refreshing = (async () => {
        const session = state.session;
        if (!session || !session.refreshToken) return false;
        try {
          const answer = await auth('token?grant_type=refresh_token',
            { body: { refresh_token: session.refreshToken } });
          saveSession(sessionFromAuth(answer, session.crmDefaults));
          return true;
        } catch (error) {
          if (state.session === session) endSession();
          return false;
        }
      })().finally(() => { state.refreshing = null; });
    }
    return state.refreshing;
  }

  async function signInWithPassword(event) {
    event.preventDefault();
    const email = $('email-input').value.trim();
    const password = $('password-input').value;
    if (!email || !password) { fieldError('password-sign-in-error', t('credentialsRequired')); return; }
    fieldError('password-sign-in-error', '');
    clearNotice();
    try {
      const answer = await withBusy(event.submitter || $('sign-in-password'),
        () => auth('token?grant_type=password', { body: { email, password } }));
      $('password-input').value = '';
      saveSession(sessionFromAuth(answer, await localCrmDefaults(answer.access_token)));
      await enterWorkspace();
    } catch (error) {
      const code = error.code || '';
      if (code === 'email_not_confirmed') fieldError('password-sign-in-error', t('emailNotConfirmed'));
      else if (code === 'invalid_credentials' || code === 'validation_failed') {
        fieldError('password-sign-in-error', t('credentialsInvalid'));
      }
      else showError(error);
    }
  }

  // A 401 with a refreshable session (e.g. after the computer slept through the refresh timer) refreshes first.
  function expireSession() {
    if (state.session && state.session.refreshToken && !state.refreshing) { refreshSession(); return; }
    if (!state.refreshing) endSession();
  }

  function endSession() {
    saveSession(null);
    stopPolling();
    showSignIn();
    showNotice(() => t('sessionExpired'), 'error');
  }

  function showSignIn() {
    $('workspace').hidden = true;
    $('sign-out').hidden = true;
    $('who').textContent = '';
    $('sign-in').hidden = false;
    $('local-sign-in').hidden = !state.config.localSignIn;
    if (state.config.demoEmail && !$('email-input').value) $('email-input').value = state.config.demoEmail;
  }

  async function signInDemo(event) {
    const button = event.currentTarget;
    clearNotice();
    try {
      const answer = await withBusy(button, () => request('local/session', { method: 'POST' }));
      saveSession({ token: answer.accessToken, userId: answer.userId, crmDefaults: answer.crmDefaults || null });
      await enterWorkspace();
    } catch (error) { showError(error); }
  }

  async function signInWithToken(event) {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!tokenUsable(token)) { fieldError('token-error', t('tokenInvalid')); return; }
    fieldError('token-error', '');
    saveSession({ token, userId: tokenClaims(token).sub, crmDefaults: null });
    await enterWorkspace();
  }

  async function signOut() {
    const session = state.session;
    // Ends this session on the server too, so its refresh token is dead; the page signs out even if that fails.
    if (session && session.refreshToken) {
      await withBusy($('sign-out'), () => auth('logout?scope=local', { token: session.token })).catch(() => {});
    }
    saveSession(null);
    stopPolling();
    state.clientId = null;
    state.messageRows = [];
    state.outbox = [];
    sessionStorage.removeItem(OUTBOX_KEY);
    $('reply-form').hidden = true;
    renderChat();
    renderChatHeader();
    showSignIn();
  }

  async function enterWorkspace() {
    restoreOutbox();
    $('sign-in').hidden = true;
    $('workspace').hidden = false;
    $('sign-out').hidden = false;
    $('sandbox-card').hidden = !state.config.sandbox;
    $('mode-badge').hidden = !state.config.sandbox;
    try {
      await withBusy(null, async () => {
        const [profiles, organizations] = await Promise.all([
          rest(`profiles?select=full_name,organization_id&id=eq.${encodeURIComponent(state.session.userId)}`),
          rest('organizations?select=name&limit=1'),
        ]);
        const person = (profiles[0] && profiles[0].full_name) || state.session.userId;
        // Files a manager attaches go under the organization's folder (the bucket's policy checks it).
        state.organizationId = profiles[0] ? profiles[0].organization_id : null;
        const organization = organizations[0] ? ` · ${organizations[0].name}` : '';
        $('who').textContent = `${person}${organization}`;
      });
    } catch (error) { showError(error); }
    await Promise.all([loadIntegrations(), loadClients()]);
    startPolling();
  }

  // --- integrations ---------------------------------------------------------------------------------------------

  function providerInfo(key) { return state.providers.find((provider) => provider.key === key); }

  async function loadIntegrations() {
    try {
      state.integrations = await withBusy(null, () => rest(
        'messenger_integrations?select=id,provider,name,is_primary,is_enabled,created_at'
        + '&messenger_type=eq.telegram&order=is_primary.desc,created_at.asc'));
    } catch (error) { showError(error); return; }
    renderIntegrations();
    renderSandboxAccounts();
    loadStatuses();
  }

  async function loadStatuses() {
    if (!state.integrations.length) return;
    try {
      const answer = await callFunction('telegram-crm-status', {});
      state.statuses = {};
      for (const status of answer.integrations || []) state.statuses[status.integrationId] = status;
    } catch (error) {
      for (const integration of state.integrations) state.statuses[integration.id] = { state: 'error' };
    }
    renderIntegrations();
  }

  function statusCell(integration) {
    const status = state.statuses[integration.id];
    if (!status) return el('span', { class: 'status', text: t('stateUnknown') });
    const labels = {
      authorized: ['ok', t('stateAuthorized')], not_authorized: ['warn', t('stateNotAuthorized')],
      not_on_server: ['warn', t('stateNotOnServer')], error: ['bad', t('stateError')],
      not_checked: ['', t('stateNotChecked')],
    };
    const [kind, label] = labels[status.state] || ['', status.state];
    const main = el('span', { class: `status ${kind}`, 'data-state': status.state },
      status.state === 'authorized' && status.username ? `${label} · @${status.username}` : label);
    const details = [];
    if (status.phone) details.push(status.phone);
    if (status.state === 'authorized') details.push(status.connected ? t('connected') : t('disconnected'));
    if (status.webhook) {
      details.push(t('deliveries', { pending: status.webhook.pending ?? 0, failed: status.webhook.failed ?? 0 }));
      if (status.webhook.paused) details.push(t('deliveryPaused'));
    }
    // The account's last account.status event (logged_out, ...): known even when the server is not reachable.
    if (status.accountState && status.accountState !== 'authorized') {
      details.push(status.accountStateReason
        ? t('accountReportedReason', { state: status.accountState, reason: status.accountStateReason })
        : t('accountReported', { state: status.accountState }));
    }
    return el('div', {}, main, details.length ? el('div', { class: 'muted small', text: details.join(' · ') }) : null);
  }

  function renderIntegrations() {
    const body = $('integrations').querySelector('tbody');
    body.replaceChildren();
    $('no-integrations').hidden = state.integrations.length > 0;
    $('integrations').hidden = state.integrations.length === 0;
    for (const integration of state.integrations) {
      const provider = providerInfo(integration.provider);
      const status = state.statuses[integration.id];
      const primaryCell = integration.is_primary
        ? el('span', { class: 'badge badge-primary', text: t('primary') })
        : el('button', { class: 'link', text: t('makePrimary'),
          onclick: (event) => makePrimary(event.currentTarget, integration) });
      const enabled = el('input', { type: 'checkbox', 'aria-label': t('colEnabled'),
        onchange: (event) => setEnabled(event.currentTarget, integration) });
      enabled.checked = integration.is_enabled;
      enabled.style.width = 'auto';
      const actions = el('td', { class: 'actions-cell' });
      if (integration.provider === 'telegram_crm' && (!status || status.state !== 'authorized')) {
        actions.append(el('button', { class: 'login-button', text: t('logIn'), onclick: () => openLogin(integration) }));
      }
      actions.append(el('button', { class: 'danger', text: t('remove'),
        onclick: (event) => removeIntegration(event.currentTarget, integration) }));
      body.append(el('tr', { 'data-integration-id': integration.id },
        el('td', { text: integration.name || '—' }),
        el('td', { text: provider ? localized(provider.label) : integration.provider }),
        el('td', {}, primaryCell),
        el('td', {}, enabled),
        el('td', {}, statusCell(integration)),
        actions));
    }
    labelColumns($('integrations'));
  }

  // On a narrow screen each row is a small card: every cell shows its column's name (CSS: td[data-label]::before).
  function labelColumns(table) {
    const names = [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll('tbody tr')) {
      [...row.children].forEach((cell, index) => {
        if (names[index]) cell.dataset.label = names[index]; else delete cell.dataset.label;
      });
    }
  }

  async function makePrimary(button, integration) {
    clearNotice();
    try {
      await withBusy(button, async () => {
        // One primary per organization (a unique index): clear the old one first.
        await rest('messenger_integrations?is_primary=eq.true&messenger_type=eq.telegram',
          { method: 'PATCH', body: { is_primary: false }, prefer: 'return=minimal' });
        await rest(`messenger_integrations?id=eq.${integration.id}`,
          { method: 'PATCH', body: { is_primary: true }, prefer: 'return=minimal' });
      });
    } catch (error) { showError(error); }
    await loadIntegrations();
  }

  async function setEnabled(checkbox, integration) {
    clearNotice();
    try {
      // Through the function, not the row: it pauses (or resumes) the account's delivery on the server too, so
      // messages wait while the integration is off instead of being refused.
      await withBusy(checkbox, () => callFunction('telegram-integration-save',
        { provider: integration.provider, integrationId: integration.id, isEnabled: checkbox.checked }));
    } catch (error) { showError(error); }
    await loadIntegrations();
  }

  async function removeIntegration(button, integration) {
    if (!window.confirm(t('confirmRemove', { name: integration.name || integration.provider }))) return;
    const logout = integration.provider === 'telegram_crm' && window.confirm(t('confirmLogout'));
    clearNotice();
    try {
      // The function tells the server first (the account stops posting here), then removes the row.
      await withBusy(button, () => callFunction('telegram-integration-remove',
        { integrationId: integration.id, logout }));
    } catch (error) { showError(error); }
    if (state.loginIntegrationId === integration.id) closeLogin();
    await loadIntegrations();
  }

  // --- the add form, rendered from the provider registry ---------------------------------------------------------

  function openForm() {
    clearNotice();
    const select = $('provider-select');
    const previous = select.value;
    select.replaceChildren(...state.providers.map((provider) => el('option',
      { value: provider.key, text: localized(provider.label) })));
    if (previous && providerInfo(previous)) select.value = previous;
    renderProviderFields();
    $('integration-form').hidden = false;
    closeLogin();
  }

  function fieldInputId(key) { return `field-${key}`; }

  function renderProviderFields() {
    const provider = providerInfo($('provider-select').value);
    const container = $('provider-fields');
    container.replaceChildren();
    if (!provider) return;
    $('provider-description').textContent = localized(provider.description);
    $('integration-submit').textContent = provider.connectFunction ? t('connect') : t('save');
    const defaults = (state.session && state.session.crmDefaults) || {};
    const other = state.lang === 'ru' ? 'en' : 'ru';
    for (const field of provider.fields) {
      const id = fieldInputId(field.key);
      const label = el('label', { for: id }, localized(field.label));
      if (field.label && field.label[other] && field.label[other] !== localized(field.label)) {
        label.append(el('span', { class: 'label-secondary', text: field.label[other] }));
      }
      const input = el('input', {
        id, name: field.key, type: field.inputType === 'password' ? 'password' : field.inputType,
        placeholder: field.placeholder || '', required: field.required, autocomplete: 'off',
        'aria-describedby': `${id}-error`,
      });
      if (provider.key === 'telegram_crm' && defaults[field.key]) input.value = defaults[field.key];
      input.addEventListener('input', () => { input.classList.remove('invalid'); fieldError(`${id}-error`, ''); });
      container.append(label, input,
        el('div', { class: 'help', text: localized(field.help) }),
        el('div', { class: 'field-error', id: `${id}-error` }));
    }
  }

  function validateField(field, value) {
    if (!value) return field.required ? t('required') : '';
    if (field.inputType === 'tel') {
      const compact = value.replace(/[\s\-().]/g, '');
      if (!/^(\+|00)?[1-9]\d{6,14}$/.test(compact)) return t('invalidPhone');
    }
    if (field.inputType === 'url' && !/^https?:\/\/[^\s/?#]+/i.test(value)) return t('invalidUrl');
    return '';
  }

  async function submitIntegration(event) {
    event.preventDefault();
    clearNotice();
    const provider = providerInfo($('provider-select').value);
    if (!provider) return;
    const values = {};
    let firstInvalid = null;
    for (const field of provider.fields) {
      const input = $(fieldInputId(field.key));
      const value = input.value.trim();
      const message = validateField(field, value);
      fieldError(`${input.id}-error`, message);
      input.classList.toggle('invalid', Boolean(message));
      if (message && !firstInvalid) firstInvalid = input;
      if (value) values[field.key] = value;
    }
    if (firstInvalid) { firstInvalid.focus(); return; }
    const functionName = provider.connectFunction || 'telegram-integration-save';
    const body = provider.connectFunction ? values : { provider: provider.key, ...values };
    let answer;
    try {
      answer = await withBusy($('integration-submit'), () => callFunction(functionName, body));
    } catch (error) {
      const input = error.field && $(fieldInputId(error.field));
      if (input) {
        input.classList.add('invalid');
        fieldError(`${input.id}-error`, errorText(error, state.lang));
        input.focus();
      } else {
        showError(error);
      }
      return;
    }
    $('integration-form').hidden = true;
    const needsLogin = answer.status === 'auth_required';
    showNotice(() => (needsLogin ? `${t('connectedOk')} ${t('needsLogin')}` : t('connectedOk')), 'info');
    await loadIntegrations();
    if (provider.key === 'telegram_crm' && answer.status === 'auth_required') {
      const integration = state.integrations.find((row) => row.id === answer.integrationId);
      if (integration) openLogin(integration);
    }
  }

  // --- logging an account in: phone → code → 2FA password ------------------------------------------------------

  function openLogin(integration) {
    state.loginIntegrationId = integration.id;
    const status = state.statuses[integration.id];
    $('login-phone').textContent = (status && status.phone) || integration.name || '';
    setLoginHint([]);
    $('login-step-start').hidden = false;
    $('login-step-code').hidden = true;
    $('login-step-password').hidden = true;
    $('login-done').hidden = true;
    $('login-code').value = '';
    $('login-password').value = '';
    fieldError('login-code-error', '');
    fieldError('login-password-error', '');
    $('integration-form').hidden = true;
    $('login-panel').hidden = false;
    $('login-panel').scrollIntoView({ block: 'nearest' });
  }

  function closeLogin() {
    state.loginIntegrationId = null;
    $('login-panel').hidden = true;
  }

  async function loginStep(button, step, extra, errorId) {
    clearNotice();
    if (errorId) fieldError(errorId, '');
    try {
      return await withBusy(button, () => callFunction('telegram-crm-auth',
        { integrationId: state.loginIntegrationId, step, ...extra }));
    } catch (error) {
      if (errorId && ['INVALID_CODE', 'PASSWORD_INVALID', 'VALIDATION_ERROR'].includes(error.code)) {
        fieldError(errorId, errorText(error, state.lang));
      } else {
        showError(error);
      }
      return null;
    }
  }

  async function loginSendCode(event) {
    const answer = await loginStep(event.currentTarget, 'send-code', {}, null);
    if (!answer) return;
    const hints = [['codeSent', { phone: answer.phone }]];
    if (state.config.sandbox) hints.push(['codeSentSandbox']);
    setLoginHint(hints);
    $('login-step-start').hidden = true;
    $('login-step-code').hidden = false;
    $('login-code').focus();
  }

  // The hint above the login steps, as [key, vars] pairs (so that switching the language rewords it).
  function setLoginHint(parts) {
    state.loginHint = parts;
    $('login-hint').textContent = parts.map(([key, vars]) => t(key, vars)).join(' ');
  }

  async function loginSignIn(event) {
    event.preventDefault();
    const input = $('login-code');
    const code = input.value.trim();
    // Telegram's login codes are digits: anything else is a typo, said here rather than by a round trip.
    const problem = !code ? t('required') : /^[0-9]+$/.test(code) ? '' : t('codeDigitsOnly');
    input.classList.toggle('invalid', Boolean(problem));
    if (problem) { fieldError('login-code-error', problem); input.focus(); return; }
    const answer = await loginStep(event.submitter || null, 'sign-in', { code }, 'login-code-error');
    if (!answer) return;
    if (answer.status === 'password_required') {
      setLoginHint([['passwordNeeded']]);
      $('login-step-code').hidden = true;
      $('login-step-password').hidden = false;
      $('login-password').focus();
      return;
    }
    await loginFinished();
  }

  async function loginPassword(event) {
    event.preventDefault();
    const password = $('login-password').value;
    if (!password) { fieldError('login-password-error', t('required')); return; }
    const answer = await loginStep(event.submitter || null, 'password', { password }, 'login-password-error');
    if (answer) await loginFinished();
  }

  async function loginFinished() {
    setLoginHint([]);
    $('login-step-code').hidden = true;
    $('login-step-password').hidden = true;
    $('login-done').hidden = false;
    await loadStatuses();
  }

  // --- the sandbox panel -----------------------------------------------------------------------------------------

  function renderSandboxAccounts() {
    if (!state.config.sandbox) return;
    const select = $('sandbox-integration');
    const previous = select.value;
    const accounts = state.integrations.filter((row) => row.provider === 'telegram_crm');
    select.replaceChildren(...accounts.map((row) => el('option', { value: row.id, text: row.name || row.id })));
    if (previous && accounts.some((row) => row.id === previous)) select.value = previous;
    $('sandbox-send').disabled = accounts.length === 0;
    fieldError('sandbox-error', accounts.length ? '' : t('sandboxNoAccount'));
  }

  function renderSandboxSenders() {
    if (!state.config.sandbox) return;
    const select = $('sandbox-from');
    const previous = select.value;
    const options = [el('option', { value: 'new', text: t('sandboxNewPerson') })];
    for (const client of state.clients.filter((row) => row.phone)) {
      options.push(el('option', { value: client.id, text: `${client.name} (${client.phone})` }));
    }
    select.replaceChildren(...options);
    if (previous && [...select.options].some((option) => option.value === previous)) select.value = previous;
    toggleSandboxNew();
  }

  function toggleSandboxNew() {
    const isNew = $('sandbox-from').value === 'new';
    document.querySelectorAll('.sandbox-new').forEach((node) => { node.hidden = !isNew; });
  }

  async function sandboxWrite(event) {
    event.preventDefault();
    clearNotice();
    fieldError('sandbox-error', '');
    const from = $('sandbox-from').value;
    const text = $('sandbox-text').value.trim();
    const body = { integrationId: $('sandbox-integration').value, text };
    let client = null;
    if (from === 'new') {
      body.fromPhone = $('sandbox-phone').value.trim();
      body.fromName = $('sandbox-name').value.trim() || undefined;
      const phoneProblem = validateField({ required: true, inputType: 'tel' }, body.fromPhone);
      if (phoneProblem) { fieldError('sandbox-error', `${t('sandboxPhone')}: ${phoneProblem}`); return; }
    } else {
      client = state.clients.find((row) => row.id === from);
      body.fromPhone = client.phone;
      body.fromName = client.name;
      body.fromUsername = client.telegram_username || undefined;
    }
    const file = pickedFile('sandbox-file');
    if (!text && !file) { fieldError('sandbox-error', `${t('sandboxText')}: ${t('required')}`); return; }
    if (file && file.size > MAX_ATTACHMENT_BYTES) {
      fieldError('sandbox-error', t('fileTooLarge', { size: formatSize(MAX_ATTACHMENT_BYTES) }));
      return;
    }
    try {
      await withBusy($('sandbox-send'), async () => {
        // The file goes to Storage first (the page's only way to hand a big file over); the function gives its
        // bytes to the simulated user, who sends it as Telegram media.
        if (file) {
          body.fileUrl = await uploadAttachment(file, newIdempotencyKey());
          body.fileName = file.name;
          body.fileType = fileTypeOf(file);
        }
        return callFunction('telegram-crm-sandbox', body);
      });
    } catch (error) {
      if (error.field) fieldError('sandbox-error', errorText(error, state.lang)); else showError(error);
      return;
    }
    $('sandbox-text').value = '';
    $('sandbox-file').value = '';
    showNotice(() => t('sandboxSent'), 'info');
    if (client) openChat(client);
  }

  // --- files in the chat -----------------------------------------------------------------------------------------

  // Files live in the private `chat-media` bucket. The page shows them through signed URLs made with the user's JWT
  // (Storage checks the organization's read policy when signing), never through a public link; <img>, <audio> and
  // <video> then stream them without holding them in the page's memory.
  const MEDIA_BUCKET = 'chat-media';
  const MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024;  // what crm_server accepts by default (CRM_MEDIA_MAX_BYTES)
  const SIGNED_URL_SECONDS = 3600;
  const IMAGE_KINDS = new Set(['photo', 'sticker']);
  const AUDIO_KINDS = new Set(['voice', 'audio']);
  const VIDEO_KINDS = new Set(['video', 'video_note', 'animation']);
  const signedUrls = new Map();  // object path → {at, promise}

  function encodePath(path) { return path.split('/').map(encodeURIComponent).join('/'); }

  // The path inside `chat-media` of a stored file URL of Storage, or null (a link from elsewhere). Matched on the
  // path alone: the row keeps the functions' address of the project, the page may be opened under another name
  // (localhost, a proxy); signing it here still asks this project's Storage, whose policy decides.
  function mediaPath(url) {
    if (typeof url !== 'string' || !isWebUrl(url)) return null;
    let path;
    try { path = new URL(url).pathname; } catch (error) { return null; }
    const match = /^\/storage\/v1\/object\/(?:authenticated\/|public\/)?chat-media\/(.+)$/.exec(path);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function signedUrl(path) {
    const cached = signedUrls.get(path);
    // Renewed well before Storage's expiry, so a player started now keeps a valid URL.
    if (cached && Date.now() - cached.at < SIGNED_URL_SECONDS * 500) return cached.promise;
    const promise = request(`${state.config.supabaseUrl}/storage/v1/object/sign/${MEDIA_BUCKET}/${encodePath(path)}`, {
      method: 'POST', headers: { ...authHeaders(), 'Content-Type': 'application/json' },
      body: JSON.stringify({ expiresIn: SIGNED_URL_SECONDS }),
    }).then((answer) => `${state.config.supabaseUrl}/storage/v1${answer.signedURL}`);
    promise.catch(() => signedUrls.delete(path));
    signedUrls.set(path, { at: Date.now(), promise });
    return promise;
  }

  function formatSize(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return '';
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // How a stored message's file is shown: inline for images, players for sound and video, a link for the rest.
  function mediaNode(row) {
    const media = (row.metadata && typeof row.metadata.media === 'object' && row.metadata.media) || {};
    const kind = row.file_type || media.kind || '';
    const name = row.file_name || media.file_name || '';
    const path = mediaPath(row.file_url);
    if (!path) {
      if (isWebUrl(row.file_url)) {
        return el('a', { class: 'file', href: row.file_url, target: '_blank', rel: 'noopener noreferrer',
          text: name || row.file_url });
      }
      if (!kind) return null;
      const reason = { too_large: t('fileTooLargeReceived'), unavailable: t('fileUnavailable') }[media.error];
      return el('span', { class: 'file missing', text: [name, reason || t('fileMissing')].filter(Boolean).join(' — ') });
    }
    let node;
    if (IMAGE_KINDS.has(kind)) {
      node = el('img', { class: `media-image ${kind}`, alt: name || kind, loading: 'lazy' });
    } else if (AUDIO_KINDS.has(kind)) {
      node = el('audio', { class: 'media-audio', controls: true, preload: 'none' });
    } else if (VIDEO_KINDS.has(kind)) {
      node = el('video', { class: `media-video ${kind}`, controls: true, preload: 'metadata', playsinline: true });
      if (kind === 'animation') { node.muted = true; node.loop = true; }
    } else {
      const size = formatSize(Number(media.size));
      node = el('a', { class: 'file', target: '_blank', rel: 'noopener noreferrer',
        text: `${name || t('openFile')}${size ? ` (${size})` : ''}` });
      if (name) node.setAttribute('download', name);
    }
    node.dataset.mediaPath = path;
    if (node.tagName !== 'A') {
      // Media gets its height only once loaded: a chat read at its end stays at its end.
      node.addEventListener(node.tagName === 'IMG' ? 'load' : 'loadedmetadata', keepChatAtEnd);
      // A file the browser cannot show (damaged, an unknown format) is still offered as a link.
      node.addEventListener('error', () => {
        const link = el('a', { class: 'file', href: node.src, target: '_blank', rel: 'noopener noreferrer',
          text: name || t('openFile') });
        node.replaceWith(link);
        keepChatAtEnd();
      });
    }
    signedUrl(path).then((url) => {
      if (node.tagName === 'A') node.href = name ? `${url}&download=${encodeURIComponent(name)}` : url;
      else node.src = url;
    }).catch((error) => {
      node.replaceWith(el('span', { class: 'file missing', text: `${name || kind} — ${errorText(error, state.lang)}` }));
    });
    return node;
  }

  function keepChatAtEnd() {
    const box = $('messages');
    if (state.chatAtEnd) box.scrollTop = box.scrollHeight;
  }

  // The kind Telegram should show a manager's file as (telegram-send's fileType).
  function fileTypeOf(file) {
    const type = (file.type || '').toLowerCase();
    if (/^image\/(jpeg|png|webp)$/.test(type) && file.size <= 10 * 1024 * 1024) return 'photo';
    if (type === 'audio/ogg' || type === 'audio/opus') return 'voice';
    if (type.startsWith('audio/')) return 'audio';
    if (type.startsWith('video/')) return 'video';
    return 'document';
  }

  function safeFileName(name) {
    const cleaned = String(name || 'file').normalize('NFKD').replace(/[^\w.\-]+/g, '_').replace(/^[._]+/, '');
    return (cleaned || 'file').slice(-100);
  }

  // Uploads a file the user picked into their own uploads folder (the bucket's policy allows nothing else) and
  // answers how the functions name it (`chat-media/<path>`, whatever address the page was opened under). Upsert: a
  // retry of the same reply (same key) overwrites the same object.
  async function uploadAttachment(file, key) {
    const path = `${state.organizationId}/uploads/${state.session.userId}/${key}-${safeFileName(file.name)}`;
    await request(`${state.config.supabaseUrl}/storage/v1/object/${MEDIA_BUCKET}/${encodePath(path)}`, {
      method: 'POST', body: file,
      headers: { ...authHeaders(), 'Content-Type': file.type || 'application/octet-stream', 'x-upsert': 'true' },
    });
    return `${MEDIA_BUCKET}/${path}`;
  }

  function pickedFile(inputId) {
    const input = $(inputId);
    return input.files && input.files[0] ? input.files[0] : null;
  }

  function renderPickedFile() {
    const file = pickedFile('reply-file');
    const chip = $('reply-file-chip');
    chip.hidden = !file;
    $('reply-file-name').textContent = file ? `${file.name} (${formatSize(file.size)})` : '';
  }

  function clearPickedFile() {
    $('reply-file').value = '';
    renderPickedFile();
  }

  // --- clients and the chat view ---------------------------------------------------------------------------------

  async function loadClients({ quiet = false } = {}) {
    try {
      const load = () => rest('clients?select=id,name,phone,telegram_username,last_message_at'
        + '&order=last_message_at.desc.nullslast,created_at.asc&limit=200');
      const clients = quiet ? await load() : await withBusy(null, load);
      // Polling must not rebuild an unchanged list under the user's pointer (or an open select).
      const signature = JSON.stringify(clients);
      if (quiet && signature === state.clientsSignature) return;
      state.clientsSignature = signature;
      state.clients = clients;
    } catch (error) {
      if (!quiet) showError(error);
      return;
    }
    renderClients();
    renderSandboxSenders();
    renderChatHeader();
  }

  function renderClients() {
    const list = $('clients');
    list.replaceChildren();
    $('no-clients').hidden = state.clients.length > 0;
    for (const client of state.clients) {
      const meta = [client.phone, client.telegram_username ? `@${client.telegram_username}` : null]
        .filter(Boolean).join(' · ');
      const pick = () => openChat(client, { reveal: true });
      const item = el('li', { 'data-client-id': client.id, class: client.id === state.clientId ? 'selected' : '',
        tabindex: '0', onclick: pick, onkeydown: (event) => { if (event.key === 'Enter') pick(); } },
      el('span', { class: 'client-name', text: client.name }),
      el('span', { class: 'client-meta', text: meta || '—' }));
      list.append(item);
    }
  }

  function openChat(client, { reveal = false } = {}) {
    const changed = client.id !== state.clientId;
    state.clientId = client.id;
    if (changed) {
      state.messagesSignature = null;
      state.messageRows = [];
      renderChat();
    }
    renderChatHeader();
    $('reply-form').hidden = false;
    renderClients();
    loadMessages();
    // One column (a phone): the chat is below the list, so bring it into view.
    if (reveal && NARROW.matches) $('chat-card').scrollIntoView({ block: 'start' });
  }

  // The open chat's header: the client's name and contacts, whatever the language (only "Chat" is translated).
  function renderChatHeader() {
    const client = state.clients.find((row) => row.id === state.clientId);
    $('chat-title').textContent = client ? client.name : t('chat');
    $('chat-subtitle').textContent = client
      ? [client.phone, client.telegram_username ? `@${client.telegram_username}` : null].filter(Boolean).join(' · ')
      : '';
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? '' : date.toLocaleString(state.lang === 'ru' ? 'ru-RU' : 'en-GB',
      { day: '2-digit', month: 'short', hour: '2-digit', minute: '2-digit' });
  }

  async function loadMessages({ quiet = false } = {}) {
    const clientId = state.clientId;
    if (!clientId) return;
    let rows;
    try {
      const load = () => rest('chat_messages?select=id,message_text,message_type,is_outgoing,is_read,created_at,'
        + 'message_status,sender_name,file_url,file_type,file_name,metadata,idempotency_key,edited_at,deleted_at'
        + `&client_id=eq.${clientId}&order=created_at.desc&limit=200`);
      rows = quiet ? await load() : await withBusy(null, load);
    } catch (error) {
      if (!quiet) showError(error);
      return;
    }
    if (clientId !== state.clientId) return;
    rows.reverse();
    // A reply whose answer was lost (or that failed after sending) is stored under its key: it was sent.
    const stored = new Set(rows.map((row) => row.idempotency_key).filter(Boolean));
    const settled = forgetStored(clientId, stored);
    markChatRead(clientId, rows);
    // An edit, a deletion or a read tick changes a row in place: part of what "unchanged" means.
    const signature = rows.map((row) => [row.id, row.message_status, row.edited_at, row.deleted_at].join(':'))
      .join(',');
    if (signature === state.messagesSignature && !settled) return;
    state.messagesSignature = signature;
    state.messageRows = rows;
    renderChat();
  }

  // The manager sees the chat, so Telegram shows the client their messages read (the double tick): asked once per
  // new unread incoming message, quietly (a logged-out account only means the client sees no tick yet).
  function markChatRead(clientId, rows) {
    const unread = rows.filter((row) => !row.is_outgoing && !row.is_read && row.message_type !== 'system');
    if (!unread.length) return;
    const newest = unread[unread.length - 1].id;
    if (state.markedRead[clientId] === newest) return;
    state.markedRead[clientId] = newest;
    callFunction('telegram-crm-mark-read', { clientId }).catch((error) => console.warn('mark-read', error));
  }

  // Only web links become clickable: a stored URL is data from outside (a `javascript:` one would run here).
  function isWebUrl(value) { return typeof value === 'string' && /^https?:\/\//i.test(value); }

  function renderChat() {
    const box = $('messages');
    const rows = state.messageRows;
    const stored = new Set(rows.map((row) => row.idempotency_key).filter(Boolean));
    const pending = state.outbox.filter((entry) => entry.clientId === state.clientId && !stored.has(entry.key));
    box.replaceChildren();
    if (!state.clientId) {
      box.append(el('p', { class: 'muted empty', id: 'chat-empty', text: t('pickClient') }));
      return;
    }
    if (!rows.length && !pending.length) {
      box.append(el('p', { class: 'muted empty', text: t('noMessages') }));
      return;
    }
    for (const row of rows) box.append(messageBubble(row));
    for (const entry of pending) box.append(outboxBubble(entry));
    box.scrollTop = box.scrollHeight;
    state.chatAtEnd = true;
  }

  // A stored message: the manager's on the right (also those written in the Telegram app, with a hint), "edited"
  // with the text before the edit as its title, a deleted one kept but struck through, and outgoing ticks.
  function messageBubble(row) {
    const kind = row.message_type === 'system' ? 'system' : row.is_outgoing ? 'out' : 'in';
    const metadata = row.metadata || {};
    const fromApp = row.is_outgoing && metadata.source === 'telegram_app';
    const who = row.is_outgoing ? (row.sender_name || t('outgoing')) : '';
    const meta = el('span', { class: 'meta' },
      [who, fromApp ? t('fromTelegramApp') : '', formatTime(row.created_at),
        row.message_status === 'failed' ? t('failed') : ''].filter(Boolean).join(' · '));
    if (row.edited_at) {
      const edits = Array.isArray(metadata.edits) ? metadata.edits : [];
      const before = edits.length ? edits[edits.length - 1].text : '';
      meta.append(' · ', el('span', { class: 'edited', text: t('edited'),
        title: before ? t('editedFrom', { text: before }) : null }));
    }
    if (row.deleted_at) meta.append(' · ', el('span', { class: 'deleted-mark', text: t('deleted') }));
    if (row.is_outgoing && (row.message_status === 'sent' || row.message_status === 'read')) {
      const read = row.message_status === 'read';
      meta.append(' ', el('span', { class: `ticks ${read ? 'read' : 'sent'}`, 'data-status': row.message_status,
        title: read ? t('tickRead') : t('tickSent'), text: read ? '✓✓' : '✓' }));
    }
    const classes = ['bubble', kind, fromApp ? 'from-app' : '', row.deleted_at ? 'deleted' : ''].filter(Boolean);
    return el('div', { class: classes.join(' '), 'data-message-id': row.id },
      mediaNode(row),
      row.message_text ? el('span', { class: 'text', text: row.message_text }) : null,
      meta);
  }

  // A reply the server has not confirmed: sending, sent (until the stored row shows up), or failed, with why and a
  // retry beside it, where the manager is looking.
  function outboxBubble(entry) {
    const label = { sending: t('sending'), failed: t('notSent'), sent: '' }[entry.status];
    const meta = [t('outgoing'), formatTime(entry.at), label].filter(Boolean).join(' · ');
    const bubble = el('div', { class: `bubble out ${entry.status}`, 'data-idempotency-key': entry.key },
      entry.file ? el('span', { class: 'file', text: entry.file.name }) : null,
      entry.text ? el('span', { class: 'text', text: entry.text }) : null,
      el('span', { class: 'meta', text: meta }));
    if (entry.status === 'failed') {
      bubble.append(el('div', { class: 'send-failure', role: 'alert' },
        el('span', { class: 'send-error', text: errorText(entry.error, state.lang, 'send') }),
        el('span', { class: 'send-actions' },
          el('button', { type: 'button', class: 'retry', text: t('retry'), onclick: () => deliver(entry) }),
          el('button', { type: 'button', class: 'link discard', text: t('discard'),
            onclick: () => { dropFromOutbox(entry.key); renderChat(); } }))));
    }
    return bubble;
  }

  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    // Plain http to another host is not a secure context, where randomUUID is missing: a v4 UUID by hand.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  async function sendReply(event) {
    event.preventDefault();
    const text = $('reply-text').value.trim();
    const file = pickedFile('reply-file');
    if ((!text && !file) || !state.clientId) return;
    clearNotice();
    if (file && file.size > MAX_ATTACHMENT_BYTES) {
      showNotice(() => t('fileTooLarge', { size: formatSize(MAX_ATTACHMENT_BYTES) }), 'error');
      return;
    }
    const entry = { key: newIdempotencyKey(), clientId: state.clientId, text, at: new Date().toISOString(),
      status: 'sending', error: null, file: null };
    if (file) {
      // Uploaded first, once: the entry then names the stored object, so a retry (even after a reload) resends it.
      try {
        const url = await withBusy($('reply-send'), () => uploadAttachment(file, entry.key));
        entry.file = { url, name: file.name, type: fileTypeOf(file) };
      } catch (error) {
        showError(error);
        return;
      }
      clearPickedFile();
    }
    state.outbox.push(entry);
    $('reply-text').value = '';
    await deliver(entry);
  }

  // Send (or resend) one reply. The Idempotency-Key is the entry's for every attempt: if an earlier attempt did
  // send, telegram-send answers with that message instead of sending again.
  async function deliver(entry) {
    if (entry.attempting) return;  // a double click on Retry
    entry.status = 'sending';
    entry.error = null;
    entry.attempting = true;
    saveOutbox();
    renderChat();
    try {
      const body = { clientId: entry.clientId, text: entry.text || undefined };
      if (entry.file) Object.assign(body, { fileUrl: entry.file.url, fileName: entry.file.name, fileType: entry.file.type });
      await withBusy(null, () => callFunction('telegram-send', body, 'POST', { 'Idempotency-Key': entry.key }));
      entry.status = 'sent';
    } catch (error) {
      if (!(error instanceof ApiError)) console.error(error);
      entry.status = 'failed';
      entry.error = { code: error.code || null, field: error.field || null, status: error.status ?? 500,
        retryAfter: error.retryAfter || null };
    } finally {
      entry.attempting = false;
    }
    saveOutbox();
    if (entry.clientId !== state.clientId) return;
    renderChat();
    if (entry.status === 'sent') {
      state.messagesSignature = null;
      await loadMessages({ quiet: true });
    }
  }

  // Entries of `clientId` whose key is among the stored messages are done; true when any was dropped.
  function forgetStored(clientId, storedKeys) {
    const before = state.outbox.length;
    state.outbox = state.outbox.filter((entry) => entry.clientId !== clientId || !storedKeys.has(entry.key)
      || entry.attempting);
    if (state.outbox.length === before) return false;
    saveOutbox();
    return true;
  }

  function dropFromOutbox(key) {
    state.outbox = state.outbox.filter((entry) => entry.key !== key);
    saveOutbox();
  }

  // Kept for the tab's life (sessionStorage), per user: a reload keeps the failed replies and their keys.
  function saveOutbox() {
    if (!state.session) return;
    const kept = state.outbox.map(({ attempting, ...entry }) => entry);
    sessionStorage.setItem(OUTBOX_KEY, JSON.stringify({ userId: state.session.userId, entries: kept }));
  }

  function restoreOutbox() {
    state.outbox = [];
    try {
      const saved = JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || 'null');
      if (!saved || saved.userId !== state.session.userId || !Array.isArray(saved.entries)) return;
      state.outbox = saved.entries.filter((entry) => entry && entry.key && entry.clientId && (entry.text || entry.file))
        .map((entry) => (entry.status === 'sending'
          // Closed while sending: it may or may not have gone; a retry under the same key settles it.
          ? { ...entry, status: 'failed', error: { code: 'INTERRUPTED', status: 0 } } : entry));
    } catch (error) { state.outbox = []; }
  }

  // --- polling for new messages ----------------------------------------------------------------------------------

  function startPolling() {
    stopPolling();
    state.pollTimer = window.setInterval(() => {
      if (document.hidden || !state.session) return;
      loadClients({ quiet: true });
      loadMessages({ quiet: true });
    }, POLL_MS);
  }

  function stopPolling() {
    if (state.pollTimer) window.clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  // --- language --------------------------------------------------------------------------------------------------

  function applyLanguage() {
    document.documentElement.lang = state.lang;
    $('lang').value = state.lang;
    document.querySelectorAll('[data-i18n]').forEach((node) => { node.textContent = t(node.dataset.i18n); });
    document.querySelectorAll('[data-i18n-placeholder]').forEach((node) => {
      node.setAttribute('placeholder', t(node.dataset.i18nPlaceholder));
    });
    document.querySelectorAll('[data-i18n-title]').forEach((node) => {
      node.setAttribute('title', t(node.dataset.i18nTitle));
    });
    if (state.session && state.config) {
      renderIntegrations();
      renderSandboxSenders();
      if (!$('integration-form').hidden) renderProviderFields();
      // The open chat stays open: only its words change (dates, "you", why a reply failed).
      renderChatHeader();
      renderChat();
      setLoginHint(state.loginHint);
    }
    renderNotice();
  }

  // --- start -----------------------------------------------------------------------------------------------------

  async function boot() {
    const saved = localStorage.getItem(LANG_KEY);
    state.lang = saved || ((navigator.language || '').toLowerCase().startsWith('ru') ? 'ru' : 'en');
    applyLanguage();

    $('lang').addEventListener('change', () => {
      state.lang = $('lang').value;
      localStorage.setItem(LANG_KEY, state.lang);
      applyLanguage();
    });
    $('notice-close').addEventListener('click', clearNotice);
    $('sign-in-demo').addEventListener('click', signInDemo);
    $('token-sign-in').addEventListener('submit', signInWithToken);
    $('password-sign-in').addEventListener('submit', signInWithPassword);
    $('sign-out').addEventListener('click', signOut);
    $('refresh-integrations').addEventListener('click', () => loadIntegrations());
    $('add-integration').addEventListener('click', openForm);
    $('provider-select').addEventListener('change', renderProviderFields);
    $('integration-form').addEventListener('submit', submitIntegration);
    $('integration-cancel').addEventListener('click', () => { $('integration-form').hidden = true; });
    $('login-send-code').addEventListener('click', loginSendCode);
    $('login-step-code').addEventListener('submit', loginSignIn);
    $('login-step-password').addEventListener('submit', loginPassword);
    $('login-close').addEventListener('click', closeLogin);
    $('sandbox-form').addEventListener('submit', sandboxWrite);
    $('sandbox-from').addEventListener('change', toggleSandboxNew);
    $('refresh-clients').addEventListener('click', () => loadClients());
    $('reply-form').addEventListener('submit', sendReply);
    $('reply-attach').addEventListener('click', () => $('reply-file').click());
    $('messages').addEventListener('scroll', () => {
      const box = $('messages');
      state.chatAtEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    });
    $('reply-file').addEventListener('change', renderPickedFile);
    $('reply-file-remove').addEventListener('click', clearPickedFile);
    $('reply-text').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) $('reply-form').requestSubmit();
    });
    $('login-code').addEventListener('input', () => {
      $('login-code').classList.remove('invalid');
      fieldError('login-code-error', '');
    });

    try {
      state.config = await withBusy(null, () => request('config.json'));
      const registry = await withBusy(null, () => request(
        `${state.config.supabaseUrl}/functions/v1/telegram-providers`, { headers: { apikey: state.config.anonKey } }));
      state.providers = registry.providers || [];
    } catch (error) {
      showError(error);
      return;
    }
    let stored = null;
    try { stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null'); } catch (error) { stored = null; }
    if (stored && tokenUsable(stored.token)) saveSession(stored);
    else if (stored && stored.refreshToken) { state.session = stored; await refreshSession(); }
    if (state.session) await enterWorkspace(); else showSignIn();
  }

  // For the browser tests (and a curious console): the sentence a manager would read for an error.
  window.tgcrmAdmin = Object.freeze({
    errorText: (error, lang, context) => errorText(error, lang || state.lang, context),
    // What the timer does a minute before the access token expires, now.
    refreshSession: () => refreshSession(),
  });

  document.addEventListener('DOMContentLoaded', boot);
})();
