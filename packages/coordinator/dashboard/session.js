// @ts-check
/**
 * The dashboard's access token and everything that carries it (as `FerrySession`, used by app.js):
 * the sign-in dialog, API calls and the event stream. The token is kept in sessionStorage (this tab
 * only, gone when it closes) and sent as `Authorization: Bearer`, never in a URL: the event stream
 * is read with fetch rather than EventSource, which cannot send headers. A 401 forgets the token
 * and asks again; a 403 (a viewer's token on an action) is an ordinary error shown where it happened.
 */
(function () {
  'use strict';
  const TOKEN_KEY = 'ferry.httpToken';
  /** How long to wait before reconnecting a dropped event stream (the server's `retry:` overrides it). */
  const DEFAULT_RETRY_MS = 2_000;
  const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

  /** @type {{name: string, role: string} | null} */
  let principal = null;
  /** @type {((p: {name: string, role: string}) => void) | null} */
  let onSignedIn = null;
  /** Open event streams' stop functions: signing out closes them. @type {Set<() => void>} */
  const streams = new Set();

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  /** An Error carrying the protocol's code and the HTTP status. @param {Response} res @param {any} json */
  function httpError(res, json) {
    const err = /** @type {any} */ (new Error(json && json.error ? json.error.message : `HTTP ${res.status}`));
    err.code = json && json.error ? json.error.code : `HTTP_${res.status}`;
    err.status = res.status;
    return err;
  }

  /**
   * Calls the HTTP API with the token; throws an Error carrying the protocol's code on failure.
   * @param {string} method @param {string} path @param {any} [body]
   */
  async function api(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token() || ''}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    const text = await res.text();
    const json = text ? JSON.parse(text) : {};
    if (res.status === 401) signOut(json.error ? json.error.message : 'The token was refused.');
    if (!res.ok) throw httpError(res, json);
    return json;
  }

  /** Forgets the token and shows the sign-in dialog with `why`. @param {string} [why] */
  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    principal = null;
    for (const stop of streams) stop();
    $('whoami').textContent = '';
    $('sign-out').hidden = true;
    document.body.dataset.role = '';
    showSignIn(why || '');
  }

  /** @param {string} why */
  function showSignIn(why) {
    const dialog = /** @type {HTMLDialogElement} */ ($('login-dialog'));
    $('login-error').textContent = why;
    $('login-error').hidden = !why;
    if (!dialog.open) dialog.showModal();
    /** @type {HTMLInputElement} */ ($('login-token')).focus();
  }

  /** Asks the server who the stored token belongs to; on success the dashboard starts. */
  async function checkToken() {
    const me = await api('GET', '/v1/whoami');
    principal = { name: me.name, role: me.role };
    $('whoami').textContent = `${me.name} (${me.role})`;
    $('sign-out').hidden = false;
    document.body.dataset.role = me.role;
    if (onSignedIn) onSignedIn(principal);
  }

  /**
   * Shows the sign-in dialog until a token is accepted, then calls `ready` (again after each new sign-in).
   * @param {(p: {name: string, role: string}) => void} ready
   */
  function start(ready) {
    onSignedIn = ready;
    const dialog = /** @type {HTMLDialogElement} */ ($('login-dialog'));
    // Escape must not leave an unusable page behind the dialog.
    dialog.addEventListener('cancel', (e) => e.preventDefault());
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = /** @type {HTMLInputElement} */ ($('login-token'));
      const value = input.value.trim();
      if (!value) return showSignIn('Paste a token first.');
      sessionStorage.setItem(TOKEN_KEY, value);
      input.value = '';
      checkToken().then(
        () => dialog.close(),
        (/** @type {any} */ err) => {
          if (err.status !== 401) showSignIn(`${err.code}: ${err.message}`);
        },
      );
    });
    // A fresh page: nothing the previous token could see stays behind the sign-in dialog.
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    if (token()) checkToken().catch((/** @type {any} */ err) => err.status === 401 || showSignIn(`${err.code}: ${err.message}`));
    else showSignIn('');
  }

  /**
   * Reads the server-sent events at `path` with the token, calling `on(event, data)` for each and
   * `status('live' | 'down')` as the connection comes and goes; reconnects until signed out.
   * @param {string} path @param {(event: string, data: any) => void} on @param {(s: string) => void} status
   */
  function eventStream(path, on, status) {
    let retryMs = DEFAULT_RETRY_MS;
    /** @type {AbortController | null} */
    let current = null;
    const connect = async () => {
      if (!token()) return;
      const ac = new AbortController();
      current = ac;
      try {
        const res = await fetch(path, { headers: { authorization: `Bearer ${token()}`, accept: 'text/event-stream' }, signal: ac.signal, cache: 'no-store' });
        if (res.status === 401) {
          signOut('The token was refused.');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        status('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) event = line.slice(7);
              else if (line.startsWith('data: ')) data.push(line.slice(6));
              else if (line.startsWith('retry: ')) retryMs = Number(line.slice(7)) || retryMs;
            }
            if (data.length > 0) on(event, JSON.parse(data.join('\n')));
          }
        }
      } catch {
        // Dropped or refused: shown as down, tried again below.
      }
      if (current !== ac || !token()) return;
      status('down');
      setTimeout(() => void connect(), retryMs);
    };
    const stop = () => {
      if (current) current.abort();
      current = null;
    };
    streams.add(stop);
    void connect();
    return {
      /** Drops the connection and opens a new one (after a new sign-in). */
      restart() {
        stop();
        void connect();
      },
    };
  }

  /** @type {any} */ (window).FerrySession = { api, start, eventStream, signOut, get principal() { return principal; } };
})();
