// @ts-check
/**
 * The dashboard's view model: pure functions and one small state holder that turn the HTTP API's
 * documents and the event stream into what the views show. No DOM and no I/O here, so it runs in
 * the browser (as `FerryViewModel`) and under jest (as a CommonJS module) alike: the unit tests in
 * packages/coordinator/src/dashboard-view-model.test.ts load this very file.
 * Plain JavaScript on purpose: the dashboard has no build step, and the coordinator serves these
 * bytes as they are.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.FerryViewModel = api;
})(typeof self !== 'undefined' ? self : globalThis, function () {
  'use strict';

  const KIB = 1024;
  const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  /** Progress samples older than this no longer count towards the current rate. */
  const RATE_WINDOW_MS = 1_000;
  /** Finished migrations the live list keeps (the Migrations view refetches the rest). */
  const LIVE_FINISHED_LIMIT = 50;
  const TERMINAL_STEPS = ['succeeded', 'rolled-back', 'failed'];
  /** The downtime chart's y axis reaches at least this far, so an empty chart's ticks stay distinct. */
  const CHART_MIN_TOP_MS = 10;

  /** @param {number} n bytes */
  function formatBytes(n) {
    if (!Number.isFinite(n) || n < 0) return '–';
    let i = 0;
    let v = n;
    while (v >= KIB && i < BINARY_UNITS.length - 1) {
      v /= KIB;
      i += 1;
    }
    if (i === 0) return `${v} B`;
    return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${BINARY_UNITS[i]}`;
  }

  /** @param {number} ms */
  function formatDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '–';
    if (ms < 1_000) return `${Math.round(ms)} ms`;
    if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 2 : 1)} s`;
    const min = Math.floor(ms / 60_000);
    return `${min} min ${Math.round((ms - min * 60_000) / 1_000)} s`;
  }

  /** @param {number} bytesPerSecond */
  function formatRate(bytesPerSecond) {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 0) return '–';
    return `${formatBytes(bytesPerSecond)}/s`;
  }

  /**
   * One row of the Cluster view, from a host of GET /v1/hosts.
   * `status` is what matters most to an operator: a lost host is lost whether cordoned or not.
   * @param {any} host
   */
  function hostView(host) {
    const criu = host.criu || {};
    const total = host.memory ? host.memory.totalBytes : 0;
    const free = host.memory ? host.memory.availableBytes : 0;
    const used = Math.max(0, total - free);
    const status = host.state === 'lost' ? 'lost' : host.cordoned ? 'cordoned' : 'alive';
    /** @type {{name: string, ok: boolean, note?: string}[]} */
    const probes = [
      { name: 'criu check', ok: !!criu.checkOk },
      { name: 'dump + restore', ok: !!criu.dumpRestoreOk, note: criu.needsFaultInjection ? 'needs CRIU_FAULT=130' : undefined },
      { name: 'lazy pages', ok: !!criu.lazyPages },
    ];
    return {
      name: host.name,
      address: host.address,
      status,
      statusLabel: host.state === 'lost' && host.cordoned ? 'lost (cordoned)' : status,
      cordoned: !!host.cordoned,
      criuVersion: criu.version || 'missing',
      criuUsable: !!criu.usable,
      criuProblem: criu.problem || null,
      probes,
      memoryTotalBytes: total,
      memoryUsedBytes: used,
      memoryFreeBytes: free,
      memoryUsedFraction: total > 0 ? used / total : 0,
      workloadCount: host.workloadCount,
      // A lost host cannot be drained (its agent does not answer); cordoning it still keeps work off it.
      canDrain: host.state === 'alive',
    };
  }

  /**
   * Hosts a workload on `currentHost` can be sent to: alive, not cordoned, CRIU usable, not its own.
   * @param {any[]} hosts @param {string} currentHost
   */
  function migrateTargets(hosts, currentHost) {
    return hosts
      .filter((h) => h.state === 'alive' && !h.cordoned && h.criu && h.criu.usable && h.name !== currentHost)
      .map((h) => h.name)
      .sort();
  }

  /** What a migration is doing after each lifecycle step (the event says what has happened). */
  const ACTIVITY = {
    requested: 'pre-flight',
    'preflight-passed': 'preparing target',
    frozen: 'freeze + dump + transfer',
    transferred: 'restore',
    restored: 'releasing source',
    'rolling-back': 'rolling back',
    succeeded: 'succeeded',
    'rolled-back': 'rolled back',
    failed: 'failed',
  };

  /**
   * Live migrations, fed by the event stream: the lifecycle steps and the target's byte counts,
   * with a transfer rate over the last few seconds of samples.
   */
  class LiveMigrations {
    constructor() {
      /** @type {Map<string, any>} */
      this.byId = new Map();
    }

    /** @param {string} id @param {any} ev */
    entry(id, ev) {
      let e = this.byId.get(id);
      if (!e) {
        e = {
          id,
          workload: ev.workload || '',
          from: ev.from || '',
          to: ev.to || '',
          step: 'requested',
          activity: ACTIVITY.requested,
          state: 'running',
          finished: false,
          bytes: 0,
          bytesTotal: null,
          rateBps: null,
          /** @type {{atMs: number, bytes: number}[]} */
          samples: [],
          figures: {},
          error: null,
          startedAtMs: Date.parse(ev.at) || ev.atMs || 0,
          updatedAtMs: 0,
        };
        this.byId.set(id, e);
      }
      return e;
    }

    /**
     * A lifecycle event; returns the entry it changed (null for non-migration events).
     * @param {any} ev
     */
    lifecycle(ev) {
      if (ev.type !== 'migration' || !ev.migrationId) return null;
      const e = this.entry(ev.migrationId, ev);
      if (e.finished) return e;
      e.step = ev.step;
      e.activity = ACTIVITY[ev.step] || ev.step;
      if (ev.state) e.state = ev.state;
      e.figures = { ...e.figures, ...(ev.figures || {}) };
      if (typeof e.figures.bytesTotal === 'number') e.bytesTotal = e.figures.bytesTotal;
      if (typeof e.figures.bytesTransferred === 'number' && e.figures.bytesTransferred > e.bytes) e.bytes = e.figures.bytesTransferred;
      e.updatedAtMs = Date.parse(ev.at) || e.updatedAtMs;
      if (TERMINAL_STEPS.includes(ev.step)) {
        e.finished = true;
        e.rateBps = null;
        e.error = ev.error || null;
        this.trim();
      }
      return e;
    }

    /**
     * The target's cumulative byte count ({migrationId, bytes, atMs}); returns the entry.
     * @param {{migrationId: string, bytes: number, atMs: number}} p
     */
    progress(p) {
      const e = this.entry(p.migrationId, { atMs: p.atMs });
      if (e.finished) return e;
      if (p.bytes >= e.bytes) e.bytes = p.bytes;
      e.samples.push({ atMs: p.atMs, bytes: p.bytes });
      while (e.samples.length > 2 && p.atMs - e.samples[0].atMs > RATE_WINDOW_MS) e.samples.shift();
      const first = e.samples[0];
      const dt = p.atMs - first.atMs;
      e.rateBps = dt > 0 ? Math.max(0, (p.bytes - first.bytes) / (dt / 1_000)) : e.rateBps;
      e.updatedAtMs = p.atMs;
      return e;
    }

    /** Entries newest first, running ones before finished ones. */
    list() {
      return [...this.byId.values()].sort((a, b) => Number(a.finished) - Number(b.finished) || b.startedAtMs - a.startedAtMs);
    }

    /** @param {string} workload */
    runningFor(workload) {
      return this.list().find((e) => !e.finished && e.workload === workload) || null;
    }

    trim() {
      const finished = [...this.byId.values()].filter((e) => e.finished).sort((a, b) => a.startedAtMs - b.startedAtMs);
      for (const e of finished.slice(0, Math.max(0, finished.length - LIVE_FINISHED_LIMIT))) this.byId.delete(e.id);
    }
  }

  /**
   * The phases of a finished migration (a record of GET /v1/migrations) on one time axis, from its
   * step history: pre-flight (request to freeze, the target's preparation included), freeze + dump
   * (CRIU's dump time), transfer (what the image stream still took after the dump: it starts while
   * the dump writes, so the overlap is shown once, as dump), restore and the source's release.
   * Phases a failed migration never reached are absent; a rollback shows as its own phase.
   * @param {any} m
   */
  function migrationTimeline(m) {
    const at = (/** @type {string} */ step) => {
      const h = (m.history || []).find((/** @type {any} */ x) => x.step === step);
      return h ? Date.parse(h.at) : null;
    };
    const start = at('requested') ?? Date.parse(m.requestedAt);
    const end = m.finishedAt ? Date.parse(m.finishedAt) : start + (m.totalMs || 0);
    const frozenAt = at('checkpointing');
    const restoringAt = at('restoring');
    const releasingAt = at('releasing');
    const rollingAt = at('rolling-back');
    const phases = m.phases || { dumpMs: 0, transferMs: 0, restoreMs: 0 };
    /** @type {{phase: string, label: string, startMs: number, ms: number}[]} */
    const raw = [];
    const add = (/** @type {string} */ phase, /** @type {string} */ label, /** @type {number} */ from, /** @type {number} */ to) => {
      if (to > from) raw.push({ phase, label, startMs: from - start, ms: to - from });
    };
    const firstAfter = (/** @type {number} */ t) => [restoringAt, releasingAt, rollingAt, end].filter((x) => x !== null && x >= t).sort((a, b) => Number(a) - Number(b))[0] ?? end;
    add('preflight', 'pre-flight', start, frozenAt ?? rollingAt ?? end);
    if (frozenAt !== null) {
      const stop = restoringAt ?? firstAfter(frozenAt);
      const dumpEnd = Math.min(stop, frozenAt + (phases.dumpMs || 0));
      add('dump', 'freeze + dump', frozenAt, dumpEnd);
      add('transfer', 'transfer', dumpEnd, stop);
    }
    if (restoringAt !== null) add('restore', 'restore', restoringAt, releasingAt ?? firstAfter(restoringAt + 1));
    if (releasingAt !== null) add('release', 'release', releasingAt, end);
    if (rollingAt !== null) add('rollback', 'roll-back', rollingAt, end);
    const totalMs = Math.max(1, end - start);
    const segments = raw.map((s) => ({ ...s, offsetFraction: s.startMs / totalMs, fraction: s.ms / totalMs }));
    const downtime =
      frozenAt !== null && m.downtimeMs > 0
        ? { startMs: frozenAt - start, ms: m.downtimeMs, offsetFraction: (frozenAt - start) / totalMs, fraction: Math.min(1, m.downtimeMs / totalMs) }
        : null;
    return { totalMs: end - start, segments, downtime, bytes: m.bytesTransferred || 0, transferMs: phases.transferMs || 0 };
  }

  /** The smallest 1, 2 or 5 times a power of ten that is >= v (a chart's top). @param {number} v */
  function niceCeiling(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /**
   * Geometry of the downtime chart: one point per finished migration that froze its workload, x by
   * finish time, y by downtime, in an SVG box of `width` x `height` with `pad` for the axes.
   * @param {any[]} migrations @param {{width: number, height: number, pad: number}} box
   */
  function downtimeChart(migrations, box) {
    const rows = migrations
      .filter((m) => m.finishedAt && m.downtimeMs > 0)
      .map((m) => ({ id: m.id, workload: m.workload, state: m.state, downtimeMs: m.downtimeMs, atMs: Date.parse(m.finishedAt) }))
      .sort((a, b) => a.atMs - b.atMs);
    const yMax = niceCeiling(Math.max(CHART_MIN_TOP_MS, ...rows.map((r) => r.downtimeMs)));
    const t0 = rows.length ? rows[0].atMs : 0;
    const t1 = rows.length ? rows[rows.length - 1].atMs : 0;
    const plotW = box.width - 2 * box.pad;
    const plotH = box.height - 2 * box.pad;
    const x = (/** @type {number} */ t) => box.pad + (t1 > t0 ? ((t - t0) / (t1 - t0)) * plotW : plotW / 2);
    const y = (/** @type {number} */ v) => box.pad + plotH - (v / yMax) * plotH;
    const points = rows.map((r) => ({ ...r, x: round2(x(r.atMs)), y: round2(y(r.downtimeMs)) }));
    const path = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x} ${p.y}`).join(' ');
    const yTicks = [0, 0.5, 1].map((f) => ({ y: round2(y(f * yMax)), label: formatDuration(f * yMax) }));
    return { points, path, yTicks, yMax, firstAtMs: t0, lastAtMs: t1 };
  }

  /** @param {number} v */
  function round2(v) {
    return Math.round(v * 100) / 100;
  }

  /**
   * One line saying how a migration ended, for the inline result and the Migrations table.
   * @param {any} m
   */
  function migrationOutcome(m) {
    if (m.state === 'succeeded') return `succeeded: ${m.workload} now on ${m.to}, downtime ${formatDuration(m.downtimeMs)}, ${formatBytes(m.bytesTransferred)} moved`;
    if (m.error) return `${m.state}: ${m.error.code}: ${m.error.message}`;
    return `${m.state}`;
  }

  return {
    formatBytes,
    formatDuration,
    formatRate,
    hostView,
    migrateTargets,
    LiveMigrations,
    migrationTimeline,
    downtimeChart,
    niceCeiling,
    migrationOutcome,
    ACTIVITY,
  };
});
