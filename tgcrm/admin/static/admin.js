// The admin page: plain JavaScript, no build step, talking only to its own origin:
// /rest/v1 with the user's JWT (RLS applies) and /functions/v1 for everything that needs an integration's secrets.
'use strict';

(() => {
  const I18N = {
    en: {
      admin: 'Admin', sandboxMode: 'Sandbox', loading: 'Loading…', signOut: 'Sign out',
      signInTitle: 'Sign in', localSignInHint: "Local mode: sign in as the demo organization's admin.",
      signInDemo: 'Sign in as the demo user', tokenLabel: 'Supabase access token (JWT)',
      signInToken: 'Sign in with this token', tokenInvalid: 'This is not a valid, unexpired access token.',
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
      sandboxNoAccount: 'Connect a telegram_crm integration first.',
      sandboxSent: 'The simulated user wrote; the message appears in the chat once crm_server delivers it.',
      clients: 'Clients', noClients: 'No clients yet.', chat: 'Chat',
      pickClient: 'Choose a client to see the conversation.', noMessages: 'No messages with this client yet.',
      replyPlaceholder: 'Write a reply…', send: 'Send',
      primary: 'Primary', makePrimary: 'Make primary', logIn: 'Log in', remove: 'Remove',
      enable: 'Enable', disable: 'Disable',
      confirmRemove: 'Remove the integration "{name}"? Its messages stay in the chats.',
      confirmLogout: 'Also log this Telegram account out of the server? (OK: log out; Cancel: keep it logged in)',
      stateAuthorized: 'Logged in', stateNotAuthorized: 'Not logged in', stateNotOnServer: 'Not on the server',
      stateError: 'Server error', stateNotChecked: 'Not checked', stateUnknown: 'Checking…',
      connected: 'connected', disconnected: 'disconnected',
      webhook: 'webhook: {pending} pending, {failed} failed',
      required: 'Required', invalidPhone: 'Enter a phone number in international format, e.g. +79990000000',
      invalidUrl: 'Enter a URL starting with https:// (http:// only for a local server)',
      connectedOk: 'Integration saved.', needsLogin: 'Now log the Telegram account in.',
      networkError: 'The server could not be reached. Is the stack running?',
      sessionExpired: 'Your session has expired: sign in again.',
      outgoing: 'you', failed: 'failed',
    },
    ru: {
      admin: 'Администрирование', sandboxMode: 'Песочница', loading: 'Загрузка…', signOut: 'Выйти',
      signInTitle: 'Вход', localSignInHint: 'Локальный режим: войти как администратор демо-организации.',
      signInDemo: 'Войти как демо-пользователь', tokenLabel: 'Токен доступа Supabase (JWT)',
      signInToken: 'Войти с этим токеном', tokenInvalid: 'Это недействительный или просроченный токен.',
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
      sandboxNoAccount: 'Сначала подключите интеграцию telegram_crm.',
      sandboxSent: 'Пользователь написал; сообщение появится в чате, когда crm_server его доставит.',
      clients: 'Клиенты', noClients: 'Клиентов пока нет.', chat: 'Чат',
      pickClient: 'Выберите клиента, чтобы увидеть переписку.', noMessages: 'С этим клиентом ещё нет сообщений.',
      replyPlaceholder: 'Напишите ответ…', send: 'Отправить',
      primary: 'Основная', makePrimary: 'Сделать основной', logIn: 'Войти', remove: 'Удалить',
      enable: 'Включить', disable: 'Выключить',
      confirmRemove: 'Удалить интеграцию «{name}»? Сообщения в чатах останутся.',
      confirmLogout: 'Заодно выйти из этого аккаунта Telegram на сервере? (OK — выйти, Отмена — оставить вход)',
      stateAuthorized: 'Вход выполнен', stateNotAuthorized: 'Вход не выполнен', stateNotOnServer: 'Нет на сервере',
      stateError: 'Ошибка сервера', stateNotChecked: 'Не проверяется', stateUnknown: 'Проверка…',
      connected: 'на связи', disconnected: 'нет связи',
      webhook: 'вебхук: в очереди {pending}, ошибок {failed}',
      required: 'Обязательное поле', invalidPhone: 'Введите номер в международном формате, например +79990000000',
      invalidUrl: 'Введите адрес, начинающийся с https:// (http:// только для локального сервера)',
      connectedOk: 'Интеграция сохранена.', needsLogin: 'Теперь войдите в аккаунт Telegram.',
      networkError: 'Сервер недоступен. Стек запущен?',
      sessionExpired: 'Сессия истекла: войдите снова.',
      outgoing: 'вы', failed: 'ошибка',
    },
  };

  const SESSION_KEY = 'tgcrm-admin-session';
  const LANG_KEY = 'tgcrm-admin-lang';
  const POLL_MS = 2500;

  const state = {
    lang: 'en', config: null, session: null, providers: [], integrations: [], statuses: {}, clients: [],
    clientId: null, clientsSignature: '', messagesSignature: '', loginIntegrationId: null, busy: 0, pollTimer: null,
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

  class ApiError extends Error {
    constructor(message, code, field, status) {
      super(message);
      this.code = code;
      this.field = field;
      this.status = status;
    }
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new ApiError(t('networkError'), 'NETWORK_ERROR', null, 0);
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
      throw new ApiError(message, body.code, body.field, response.status);
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

  function callFunction(name, body, method = 'POST') {
    const headers = authHeaders();
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

  function showNotice(message, kind) {
    $('notice-text').textContent = message;
    $('notice').className = `notice${kind === 'info' ? ' info' : ''}`;
    $('notice').hidden = false;
  }

  function showError(error) {
    const code = error && error.code && error.code !== 'NETWORK_ERROR' ? ` (${error.code})` : '';
    showNotice(`${error && error.message ? error.message : String(error)}${code}`, 'error');
  }

  function clearNotice() { $('notice').hidden = true; }

  function fieldError(id, message) {
    const target = $(id);
    if (target) target.textContent = message || '';
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
  }

  function expireSession() {
    saveSession(null);
    stopPolling();
    showSignIn();
    showNotice(t('sessionExpired'), 'error');
  }

  function showSignIn() {
    $('workspace').hidden = true;
    $('sign-out').hidden = true;
    $('who').textContent = '';
    $('sign-in').hidden = false;
    $('local-sign-in').hidden = !state.config.localSignIn;
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

  function signOut() {
    saveSession(null);
    stopPolling();
    state.clientId = null;
    showSignIn();
  }

  async function enterWorkspace() {
    $('sign-in').hidden = true;
    $('workspace').hidden = false;
    $('sign-out').hidden = false;
    $('sandbox-card').hidden = !state.config.sandbox;
    $('mode-badge').hidden = !state.config.sandbox;
    try {
      await withBusy(null, async () => {
        const [profiles, organizations] = await Promise.all([
          rest(`profiles?select=full_name&id=eq.${encodeURIComponent(state.session.userId)}`),
          rest('organizations?select=name&limit=1'),
        ]);
        const person = (profiles[0] && profiles[0].full_name) || state.session.userId;
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
      for (const integration of state.integrations) {
        state.statuses[integration.id] = { state: 'error', error: error.message };
      }
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
    const main = el('span', { class: `status ${kind}`, 'data-state': status.state, title: status.error || '' },
      status.state === 'authorized' && status.username ? `${label} · @${status.username}` : label);
    const details = [];
    if (status.phone) details.push(status.phone);
    if (status.state === 'authorized') details.push(status.connected ? t('connected') : t('disconnected'));
    if (status.webhook) {
      details.push(t('webhook', { pending: status.webhook.pending ?? 0, failed: status.webhook.failed ?? 0 }));
    }
    if (status.error) details.push(status.error);
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
      { value: provider.key, text: `${localized(provider.label)} (${provider.key})` })));
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
        fieldError(`${input.id}-error`, error.message);
        input.focus();
      } else {
        showError(error);
      }
      return;
    }
    $('integration-form').hidden = true;
    showNotice(answer.status === 'auth_required' ? `${t('connectedOk')} ${t('needsLogin')}` : t('connectedOk'), 'info');
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
    $('login-hint').textContent = '';
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
        fieldError(errorId, error.message);
      } else {
        showError(error);
      }
      return null;
    }
  }

  async function loginSendCode(event) {
    const answer = await loginStep(event.currentTarget, 'send-code', {}, null);
    if (!answer) return;
    const hints = [t('codeSent', { phone: answer.phone })];
    if (state.config.sandbox) hints.push(t('codeSentSandbox'));
    $('login-hint').textContent = hints.join(' ');
    $('login-step-start').hidden = true;
    $('login-step-code').hidden = false;
    $('login-code').focus();
  }

  async function loginSignIn(event) {
    event.preventDefault();
    const code = $('login-code').value.trim();
    if (!code) { fieldError('login-code-error', t('required')); return; }
    const answer = await loginStep(event.submitter || null, 'sign-in', { code }, 'login-code-error');
    if (!answer) return;
    if (answer.status === 'password_required') {
      $('login-hint').textContent = t('passwordNeeded');
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
    $('login-hint').textContent = '';
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
    if (!text) { fieldError('sandbox-error', `${t('sandboxText')}: ${t('required')}`); return; }
    try {
      await withBusy($('sandbox-send'), () => callFunction('telegram-crm-sandbox', body));
    } catch (error) {
      if (error.field) fieldError('sandbox-error', error.message); else showError(error);
      return;
    }
    $('sandbox-text').value = '';
    showNotice(t('sandboxSent'), 'info');
    if (client) openChat(client);
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
  }

  function renderClients() {
    const list = $('clients');
    list.replaceChildren();
    $('no-clients').hidden = state.clients.length > 0;
    for (const client of state.clients) {
      const meta = [client.phone, client.telegram_username ? `@${client.telegram_username}` : null]
        .filter(Boolean).join(' · ');
      const item = el('li', { 'data-client-id': client.id, class: client.id === state.clientId ? 'selected' : '',
        tabindex: '0', onclick: () => openChat(client),
        onkeydown: (event) => { if (event.key === 'Enter') openChat(client); } },
      el('span', { class: 'client-name', text: client.name }),
      el('span', { class: 'client-meta', text: meta || '—' }));
      list.append(item);
    }
  }

  function openChat(client) {
    state.clientId = client.id;
    state.messagesSignature = null;
    $('chat-title').textContent = client.name;
    $('chat-subtitle').textContent = [client.phone, client.telegram_username ? `@${client.telegram_username}` : null]
      .filter(Boolean).join(' · ');
    $('reply-form').hidden = false;
    renderClients();
    loadMessages();
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
      const load = () => rest('chat_messages?select=id,message_text,message_type,is_outgoing,created_at,'
        + `message_status,sender_name,file_url,file_name&client_id=eq.${clientId}&order=created_at.desc&limit=200`);
      rows = quiet ? await load() : await withBusy(null, load);
    } catch (error) {
      if (!quiet) showError(error);
      return;
    }
    if (clientId !== state.clientId) return;
    rows.reverse();
    const signature = rows.map((row) => `${row.id}:${row.message_status}`).join(',');
    if (signature === state.messagesSignature) return;
    state.messagesSignature = signature;
    renderMessages(rows);
  }

  // Only web links become clickable: a stored URL is data from outside (a `javascript:` one would run here).
  function isWebUrl(value) { return typeof value === 'string' && /^https?:\/\//i.test(value); }

  function renderMessages(rows) {
    const box = $('messages');
    box.replaceChildren();
    if (!rows.length) {
      box.append(el('p', { class: 'muted empty', text: t('noMessages') }));
      return;
    }
    for (const row of rows) {
      const kind = row.message_type === 'system' ? 'system' : row.is_outgoing ? 'out' : 'in';
      const who = row.is_outgoing ? (row.sender_name || t('outgoing')) : '';
      const meta = [who, formatTime(row.created_at), row.message_status === 'failed' ? t('failed') : '']
        .filter(Boolean).join(' · ');
      const bubble = el('div', { class: `bubble ${kind}`, 'data-message-id': row.id },
        row.message_text ? el('span', { class: 'text', text: row.message_text }) : null,
        isWebUrl(row.file_url) ? el('a', { class: 'file', href: row.file_url, target: '_blank',
          rel: 'noopener noreferrer', text: `📎 ${row.file_name || row.file_url}` }) : null,
        el('span', { class: 'meta', text: meta }));
      box.append(bubble);
    }
    box.scrollTop = box.scrollHeight;
  }

  async function sendReply(event) {
    event.preventDefault();
    clearNotice();
    const text = $('reply-text').value.trim();
    if (!text || !state.clientId) return;
    try {
      await withBusy($('reply-send'), () => callFunction('telegram-send', { clientId: state.clientId, text }));
    } catch (error) { showError(error); return; }
    $('reply-text').value = '';
    await loadMessages();
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
      state.messagesSignature = null;
      if (state.clientId) loadMessages({ quiet: true });
    }
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
    $('reply-text').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) $('reply-form').requestSubmit();
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
    try {
      const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (stored && tokenUsable(stored.token)) state.session = stored;
    } catch (error) { state.session = null; }
    if (state.session) await enterWorkspace(); else showSignIn();
  }

  document.addEventListener('DOMContentLoaded', boot);
})();
