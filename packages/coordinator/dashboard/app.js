// @ts-check
/**
 * The dashboard's DOM side: fetches the HTTP API (same origin, same port), listens to the
 * coordinator's event stream (/v1/events/stream) and renders three views; the token that both
 * need, and the sign-in dialog, are session.js's. Formatting and every
 * computation live in view-model.js, element building and keyed rows in dom.js; this file only moves
 * data into elements.
 * Text from the cluster (names, error messages) goes in with textContent, never as HTML.
 * Rows are kept by key and updated in place, so a periodic refresh never steals keyboard focus.
 */
(function () {
  'use strict';
  /** @type {any} */
  const VM = /** @type {any} */ (window).FerryViewModel;
  /** Hosts' memory and workloads' RSS come from heartbeats; refetch this often. */
  const REFRESH_INTERVAL_MS = 5_000;
  const CHART_BOX = { width: 640, height: 200, pad: 36 };
  const TIMELINE_WIDTH = 300;

  const state = {
    /** @type {any[]} */ hosts: [],
    /** @type {any[]} */ workloads: [],
    /** @type {any[]} */ migrations: [],
    live: new VM.LiveMigrations(),
    /** Inline result per workload: {text, kind}. */
    /** @type {Map<string, {text: string, kind: string}>} */ results: new Map(),
    view: 'cluster',
  };

  // ---- helpers ----
  const { $, h, s, badge, syncRows, cell } = /** @type {any} */ (window).FerryDom;

  const Session = /** @type {any} */ (window).FerrySession;
  const api = Session.api;
  /** Whether the signed-in token may act (migrate, cordon, drain): a viewer's buttons are disabled. */
  const canAct = () => !!Session.principal && Session.principal.role === 'operator';
  const VIEWER_HINT = 'needs an operator token';

  /** @param {any} err */
  const errorText = (err) => `${err.code || 'ERROR'}: ${err.message}`;

  /** @param {string} text */
  function announce(text) {
    $('announcer').textContent = text;
  }

  // ---- dialogs ----
  /**
   * A modal confirmation; resolves true when the operator confirms.
   * @param {string} title @param {string} text @param {string} okLabel
   */
  function confirmAction(title, text, okLabel) {
    const dialog = /** @type {HTMLDialogElement} */ ($('confirm-dialog'));
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
      dialog.showModal();
      // The safe choice has focus first: Enter on an unread dialog cancels.
      /** @type {HTMLElement} */ (dialog.querySelector('button[value="cancel"]')).focus();
    });
  }

  /**
   * Asks where to migrate `w`; resolves with {to} ("" = let ferry place it) or null when cancelled.
   * @param {any} w
   */
  function pickTarget(w) {
    const dialog = /** @type {HTMLDialogElement} */ ($('migrate-dialog'));
    const select = /** @type {HTMLSelectElement} */ ($('migrate-target'));
    $('migrate-title').textContent = `Migrate ${w.name} from ${w.host}`;
    const targets = VM.migrateTargets(state.hosts, w.host);
    select.replaceChildren(h('option', { value: '', text: 'Let ferry place it' }), ...targets.map((/** @type {string} */ t) => h('option', { value: t, text: t })));
    if (targets.length > 0) select.value = targets[0];
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm' ? { to: select.value } : null), { once: true });
      dialog.showModal();
      select.focus();
    });
  }

  // ---- actions ----
  /** @param {any} host @param {boolean} cordon */
  async function setCordon(host, cordon) {
    const verb = cordon ? 'Cordon' : 'Uncordon';
    const ok = await confirmAction(
      `${verb} ${host.name}?`,
      cordon ? `No new workload will be placed on ${host.name}. Workloads running there stay where they are.` : `${host.name} will take new workloads again.`,
      verb,
    );
    if (!ok) return;
    const out = $('cluster-result');
    try {
      await api('POST', `/v1/hosts/${encodeURIComponent(host.name)}/${cordon ? 'cordon' : 'uncordon'}`);
      out.textContent = `${host.name} ${cordon ? 'cordoned' : 'uncordoned'}.`;
    } catch (err) {
      out.textContent = `${verb} ${host.name} failed: ${errorText(err)}`;
    }
    await refresh();
  }

  /** @param {any} host */
  async function drain(host) {
    const ok = await confirmAction(
      `Drain ${host.name}?`,
      `${host.name} is cordoned and each of its ${host.workloadCount} workload(s) is live-migrated to another host. Each workload pauses briefly while it moves.`,
      'Drain',
    );
    if (!ok) return;
    const out = $('cluster-result');
    try {
      const plan = await api('POST', `/v1/hosts/${encodeURIComponent(host.name)}/drain`, {});
      out.textContent = plan.workloads.length
        ? `Draining ${host.name} (${plan.drainId}): moving ${plan.workloads.join(', ')}.`
        : `${host.name} cordoned; it runs no workloads to move.`;
    } catch (err) {
      out.textContent = `Drain ${host.name} failed: ${errorText(err)}`;
    }
    await refresh();
  }

  /** @param {any} w */
  async function migrate(w) {
    const choice = await pickTarget(w);
    if (!choice) return;
    const body = choice.to ? { workload: w.name, to: choice.to } : { workload: w.name };
    state.results.set(w.name, { text: `Migrating ${choice.to ? `to ${choice.to}` : '(ferry places it)'}…`, kind: 'busy' });
    renderWorkloads();
    try {
      // Answers when the migration has ended; the event stream shows its steps meanwhile.
      const { migration } = await api('POST', '/v1/migrations', body);
      state.results.set(w.name, { text: VM.migrationOutcome(migration), kind: migration.state === 'succeeded' ? 'ok' : 'bad' });
      announce(`Migration of ${w.name} ${migration.state}.`);
    } catch (err) {
      state.results.set(w.name, { text: `Migration failed: ${errorText(err)}`, kind: 'bad' });
      announce(`Migration of ${w.name} failed.`);
    }
    await refresh();
  }

  // ---- views ----
  function renderCluster() {
    const views = state.hosts.map(VM.hostView);
    const alive = views.filter((/** @type {any} */ v) => v.status !== 'lost').length;
    $('cluster-summary').textContent = `${views.length} host(s): ${alive} up, ${views.filter((/** @type {any} */ v) => v.cordoned).length} cordoned, ${views.filter((/** @type {any} */ v) => v.status === 'lost').length} lost; ${state.workloads.length} workload(s).`;
    const tbody = /** @type {HTMLTableSectionElement} */ ($('hosts-table').querySelector('tbody'));
    syncRows(tbody, views, (v) => v.name, (tr, v, fresh) => {
      const raw = state.hosts.find((x) => x.name === v.name);
      cell(tr, 0, () => h('span', {}, v.name, h('br'), h('small', { class: 'hint', text: v.address })), v.name + v.address, true);
      cell(tr, 1, () => badge(v.statusLabel, v.status === 'alive' ? 'ok' : v.status === 'lost' ? 'bad' : 'warn'), v.statusLabel);
      cell(tr, 2, () => h('span', {}, v.criuVersion, ' ', v.criuUsable ? badge('usable', 'ok') : badge('not usable', 'bad')), `${v.criuVersion}${v.criuUsable}`);
      cell(
        tr,
        3,
        () =>
          h(
            'div',
            {},
            h('ul', { class: 'probes' }, ...v.probes.map((/** @type {any} */ p) => h('li', { class: p.ok ? 'pass' : 'fail' }, `${p.name}${p.ok ? '' : ' (no)'}`, p.note ? h('small', { class: 'hint', text: ` — ${p.note}` }) : null))),
            v.criuProblem ? h('p', { class: 'problem', text: v.criuProblem }) : null,
          ),
        JSON.stringify([v.probes, v.criuProblem]),
      );
      const memText = `${VM.formatBytes(v.memoryUsedBytes)} used / ${VM.formatBytes(v.memoryFreeBytes)} free`;
      cell(
        tr,
        4,
        () =>
          h(
            'span',
            {},
            memText,
            h('meter', { class: 'meter', min: 0, max: 1, low: 0.7, high: 0.9, optimum: 0.2, value: v.memoryUsedFraction.toFixed(3), 'aria-label': `${v.name} memory used: ${Math.round(v.memoryUsedFraction * 100)}%` }),
          ),
        memText,
      );
      const wl = cell(tr, 5, () => String(v.workloadCount), String(v.workloadCount));
      wl.className = 'num';
      // The actions cell is built once and only updated, so a refresh keeps focus on its buttons.
      if (fresh || tr.cells.length < 7) {
        const cordonBtn = h('button', { type: 'button', 'data-action': 'cordon', onclick: () => setCordon(state.hosts.find((x) => x.name === v.name), !state.hosts.find((x) => x.name === v.name).cordoned) });
        const drainBtn = h('button', { type: 'button', 'data-action': 'drain', text: 'Drain', 'aria-label': `Drain ${v.name}`, onclick: () => drain(state.hosts.find((x) => x.name === v.name)) });
        tr.append(h('td', {}, h('div', { class: 'actions' }, cordonBtn, drainBtn)));
      }
      const cordonBtn = /** @type {HTMLButtonElement} */ (tr.querySelector('button[data-action="cordon"]'));
      cordonBtn.textContent = raw.cordoned ? 'Uncordon' : 'Cordon';
      cordonBtn.setAttribute('aria-label', `${raw.cordoned ? 'Uncordon' : 'Cordon'} ${v.name}`);
      cordonBtn.disabled = !canAct();
      const drainBtn = /** @type {HTMLButtonElement} */ (tr.querySelector('button[data-action="drain"]'));
      drainBtn.disabled = !v.canDrain || !canAct();
      for (const b of [cordonBtn, drainBtn]) b.title = canAct() ? '' : VIEWER_HINT;
    });
  }

  function renderWorkloads() {
    const tbody = /** @type {HTMLTableSectionElement} */ ($('workloads-table').querySelector('tbody'));
    $('workloads-empty').hidden = state.workloads.length > 0;
    const items = [...state.workloads].sort((a, b) => a.name.localeCompare(b.name));
    syncRows(tbody, items, (w) => w.name, (tr, w, fresh) => {
      // Its local dirs (ferry run --local-dir) move with it: shown under its name.
      const localDirs = (w.localDirs || []).join(', ');
      cell(tr, 0, () => (localDirs ? h('span', {}, w.name, h('br'), h('small', { class: 'hint', text: `local: ${localDirs}` })) : w.name), w.name + localDirs, true);
      cell(tr, 1, () => w.host, w.host);
      cell(tr, 2, () => badge(w.state, w.state === 'running' ? 'ok' : w.state === 'frozen' ? 'info' : 'warn'), w.state);
      cell(tr, 3, () => String(w.pid), String(w.pid)).className = 'num';
      cell(tr, 4, () => VM.formatBytes(w.rssBytes), String(w.rssBytes)).className = 'num';
      if (fresh || tr.cells.length < 6) {
        tr.append(h('td', {}, h('button', { type: 'button', 'data-action': 'migrate', text: 'Migrate…', 'aria-label': `Migrate ${w.name}`, onclick: () => migrate(state.workloads.find((x) => x.name === w.name)) })));
        tr.append(h('td', { class: 'result', 'aria-live': 'polite', 'data-role': 'result' }));
      }
      const live = state.live.runningFor(w.name);
      const busy = !!live || (state.results.get(w.name) || {}).kind === 'busy';
      const migrateBtn = /** @type {HTMLButtonElement} */ (tr.querySelector('button[data-action="migrate"]'));
      migrateBtn.disabled = busy || w.state !== 'running' || !canAct();
      migrateBtn.title = canAct() ? '' : VIEWER_HINT;
      const r = state.results.get(w.name);
      const text = live
        ? `${live.from} → ${live.to}: ${live.activity}, ${VM.formatBytes(live.bytes)} moved${live.rateBps ? ` at ${VM.formatRate(live.rateBps)}` : ''}`
        : r
          ? r.text
          : '';
      const resultCell = tr.cells[6];
      if (resultCell.textContent !== text) resultCell.textContent = text;
      resultCell.dataset.kind = live ? 'busy' : r ? r.kind : '';
    });
  }

  function renderLive() {
    const running = state.live.list().filter((/** @type {any} */ e) => !e.finished);
    $('live-empty').hidden = running.length > 0;
    const tbody = /** @type {HTMLTableSectionElement} */ ($('live-table').querySelector('tbody'));
    syncRows(tbody, running, (e) => e.id, (tr, e) => {
      cell(tr, 0, () => e.id, e.id, true);
      cell(tr, 1, () => e.workload, e.workload);
      cell(tr, 2, () => `${e.from} → ${e.to}`, `${e.from}${e.to}`).className = 'nowrap';
      cell(tr, 3, () => e.activity, e.activity).dataset.role = 'step';
      const bytesText = e.bytesTotal ? `${VM.formatBytes(e.bytes)} of ${VM.formatBytes(e.bytesTotal)}` : VM.formatBytes(e.bytes);
      cell(
        tr,
        4,
        () => {
          const p = h('progress', { max: e.bytesTotal || 1, 'aria-label': `${e.workload} bytes moved` });
          if (e.bytesTotal) /** @type {HTMLProgressElement} */ (p).value = Math.min(e.bytes, e.bytesTotal);
          else p.removeAttribute('value'); // size unknown until the dump ends: an indeterminate bar
          return h('span', {}, p, ' ', h('span', { 'data-role': 'bytes', text: bytesText }));
        },
        bytesText,
      ).className = 'num';
      cell(tr, 5, () => VM.formatRate(e.rateBps ?? NaN), String(e.rateBps)).className = 'num';
    });
  }

  function renderMigrations() {
    renderLive();
    const ms = state.migrations;
    $('migrations-empty').hidden = ms.length > 0;
    const tbody = /** @type {HTMLTableSectionElement} */ ($('migrations-table').querySelector('tbody'));
    syncRows(tbody, ms, (m) => m.id, (tr, m) => {
      cell(tr, 0, () => m.id, m.id, true);
      cell(tr, 1, () => m.workload, m.workload);
      cell(tr, 2, () => `${m.from} → ${m.to}`, `${m.from}${m.to}`).className = 'nowrap';
      cell(tr, 3, () => badge(m.state, m.state === 'succeeded' ? 'ok' : m.state === 'running' || m.state === 'pending' ? 'info' : 'bad'), m.state);
      const fin = m.finishedAt ? new Date(m.finishedAt).toLocaleTimeString() : '—';
      cell(tr, 4, () => fin, fin).className = 'num';
      cell(tr, 5, () => (m.finishedAt && m.downtimeMs > 0 ? VM.formatDuration(m.downtimeMs) : '—'), `${m.finishedAt}${m.downtimeMs}`).className = 'num';
      cell(tr, 6, () => VM.formatBytes(m.bytesTransferred), String(m.bytesTransferred)).className = 'num';
      cell(tr, 7, () => (m.finishedAt ? timeline(m) : h('span', { class: 'hint', text: 'in progress' })), `${m.finishedAt}${m.state}`).dataset.role = 'timeline';
      cell(
        tr,
        8,
        () => (m.error ? h('span', {}, h('span', { class: 'error-code', text: m.error.code }), h('br'), m.error.message) : ''),
        m.error ? `${m.error.code}${m.error.message}` : '',
      );
    });
    renderChart();
  }

  /** The phases of one finished migration as an SVG bar, with the downtime marked under it. @param {any} m */
  function timeline(m) {
    const t = VM.migrationTimeline(m);
    const label = `${t.segments.map((/** @type {any} */ x) => `${x.label} ${VM.formatDuration(x.ms)}`).join(', ')}; total ${VM.formatDuration(t.totalMs)}${t.downtime ? `; downtime ${VM.formatDuration(t.downtime.ms)}` : ''}`;
    const svg = s('svg', { class: 'timeline', viewBox: `0 0 ${TIMELINE_WIDTH} 26`, role: 'img', 'aria-label': `Timeline: ${label}` });
    for (const seg of t.segments) {
      const r = s('rect', { class: `phase-${seg.phase}`, x: (seg.offsetFraction * TIMELINE_WIDTH).toFixed(2), y: 2, width: Math.max(1, seg.fraction * TIMELINE_WIDTH).toFixed(2), height: 14 });
      r.append(s('title', { text: `${seg.label}: ${VM.formatDuration(seg.ms)}` }));
      svg.append(r);
    }
    if (t.downtime) {
      const r = s('rect', { class: 'downtime', x: (t.downtime.offsetFraction * TIMELINE_WIDTH).toFixed(2), y: 19, width: Math.max(1, t.downtime.fraction * TIMELINE_WIDTH).toFixed(2), height: 5 });
      r.append(s('title', { text: `downtime: ${VM.formatDuration(t.downtime.ms)}` }));
      svg.append(r);
    }
    const text = `${VM.formatDuration(t.totalMs)} total · ${t.segments.map((/** @type {any} */ x) => `${x.label} ${VM.formatDuration(x.ms)}`).join(' · ')}`;
    return h('div', {}, svg, h('div', { class: 'timeline-text', 'aria-hidden': 'true', text }));
  }

  function renderChart() {
    const svg = $('downtime-chart');
    const c = VM.downtimeChart(state.migrations, CHART_BOX);
    const { width, height, pad } = CHART_BOX;
    const parts = [];
    for (const t of c.yTicks) {
      parts.push(s('line', { class: 'grid', x1: pad, x2: width - pad, y1: t.y, y2: t.y }));
      parts.push(s('text', { x: pad - 4, y: t.y + 4, 'text-anchor': 'end', text: t.label }));
    }
    parts.push(s('line', { class: 'axis', x1: pad, x2: pad, y1: pad, y2: height - pad }));
    parts.push(s('line', { class: 'axis', x1: pad, x2: width - pad, y1: height - pad, y2: height - pad }));
    if (c.points.length > 1) parts.push(s('path', { class: 'line', d: c.path }));
    for (const p of c.points) {
      const dot = s('circle', { class: `point ${p.state}`, cx: p.x, cy: p.y, r: 4 });
      dot.append(s('title', { text: `${p.id} (${p.workload}): ${VM.formatDuration(p.downtimeMs)} at ${new Date(p.atMs).toLocaleTimeString()}` }));
      parts.push(dot);
    }
    if (c.points.length > 0) {
      parts.push(s('text', { x: pad, y: height - pad + 16, text: new Date(c.firstAtMs).toLocaleTimeString() }));
      if (c.points.length > 1) parts.push(s('text', { x: width - pad, y: height - pad + 16, 'text-anchor': 'end', text: new Date(c.lastAtMs).toLocaleTimeString() }));
    } else {
      parts.push(s('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', text: 'no finished migrations yet' }));
    }
    svg.replaceChildren(...parts);
    const last = c.points[c.points.length - 1];
    $('chart-caption').textContent = c.points.length
      ? `Downtime of the last ${c.points.length} migration(s) by finish time; latest ${VM.formatDuration(last.downtimeMs)} (${last.workload}), highest ${VM.formatDuration(Math.max(...c.points.map((/** @type {any} */ p) => p.downtimeMs)))}. The table below lists each one.`
      : 'Downtime per migration: no finished migration yet.';
  }

  function render() {
    renderCluster();
    renderWorkloads();
    renderMigrations();
  }

  // ---- data ----
  let refreshing = null;
  /** Refetches hosts, workloads and migrations (one request of each at a time). */
  function refresh() {
    if (!Session.principal) return Promise.resolve();
    if (!refreshing) {
      refreshing = Promise.all([api('GET', '/v1/hosts'), api('GET', '/v1/workloads'), api('GET', '/v1/migrations')])
        .then(([hosts, workloads, migrations]) => {
          state.hosts = hosts.hosts;
          state.workloads = workloads.workloads;
          state.migrations = migrations.migrations;
          // A page opened mid-migration still shows it as live.
          for (const m of state.migrations) {
            if (m.finishedAt === null && !state.live.byId.has(m.id)) state.live.lifecycle({ type: 'migration', migrationId: m.id, step: 'requested', state: m.state, workload: m.workload, from: m.from, to: m.to, at: m.requestedAt, figures: {} });
          }
          render();
        })
        .catch((err) => {
          $('connection').textContent = `API error: ${errorText(err)}`;
          $('connection').dataset.state = 'down';
        })
        .finally(() => {
          refreshing = null;
        });
    }
    return refreshing;
  }

  let liveFrame = 0;
  /** Progress arrives several times a second per migration: draw at most once per frame. */
  function scheduleLive() {
    if (liveFrame) return;
    liveFrame = requestAnimationFrame(() => {
      liveFrame = 0;
      renderLive();
      renderWorkloads();
    });
  }

  /** The live stream: lifecycle events and progress, read with the token (session.js). */
  function connectEvents() {
    const conn = $('connection');
    return Session.eventStream(
      '/v1/events/stream',
      (/** @type {string} */ event, /** @type {any} */ ev) => {
        if (event === 'lifecycle') onLifecycle(ev);
        else if (event === 'progress') {
          state.live.progress(ev);
          scheduleLive();
        }
      },
      (/** @type {string} */ status) => {
        conn.textContent = status === 'live' ? 'Live' : 'Reconnecting…';
        conn.dataset.state = status;
        // Anything missed while disconnected is in the API's answers.
        if (status === 'live') void refresh();
      },
    );
  }

  /** @param {any} ev */
  function onLifecycle(ev) {
    if (ev.type === 'migration') {
      const e = state.live.lifecycle(ev);
      if (e) announce(`Migration of ${e.workload} ${e.from} to ${e.to}: ${e.activity}.`);
      scheduleLive();
      // A finished migration's record (history, phases) and the workloads' new places.
      if (e && e.finished) void refresh();
    } else {
      if (ev.type === 'drain' && ev.step === 'drain-finished') {
        const f = ev.figures || {};
        $('cluster-result').textContent = `Drain of ${ev.host} finished: ${f.succeeded ?? 0} moved, ${f.failed ?? 0} failed, ${f.unplaced ?? 0} without a place.`;
      }
      void refresh();
    }
  }

  // ---- navigation ----
  const VIEWS = ['cluster', 'workloads', 'migrations'];
  /** @param {boolean} moveFocus */
  function showView(moveFocus) {
    const want = location.hash.replace('#', '');
    state.view = VIEWS.includes(want) ? want : 'cluster';
    for (const v of VIEWS) {
      $(`view-${v}`).hidden = v !== state.view;
      const link = /** @type {HTMLElement} */ (document.querySelector(`nav a[data-view="${v}"]`));
      if (v === state.view) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `ferry — ${state.view}`;
    // After a click on a view link, put keyboard and screen-reader users at the view's heading.
    if (moveFocus) $(`h-${state.view}`).focus();
  }

  window.addEventListener('hashchange', () => showView(true));
  showView(false);
  /** @type {any} */
  let stream = null;
  // Nothing is fetched until a token is accepted; each sign-in (again after a 401) reconnects.
  Session.start(() => {
    if (stream) stream.restart();
    else stream = connectEvents();
    void refresh();
  });
  setInterval(() => void refresh(), REFRESH_INTERVAL_MS);
})();
