/**
 * The dashboard's view model (dashboard/view-model.js, plain JavaScript served as it is) as the
 * browser uses it: formatting, host rows, target choice, live progress with rates, phase timelines
 * and the downtime chart's geometry.
 */
import { join } from 'node:path';
import { DASHBOARD_DIR } from './dashboard';

const VM = require(join(DASHBOARD_DIR, 'view-model.js'));

const criu = { version: '4.1.1', usable: true, checkOk: true, needsFaultInjection: true, dumpRestoreOk: true, lazyPages: false };
const host = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  state: 'alive',
  cordoned: false,
  address: '198.18.0.2',
  criu,
  memory: { totalBytes: 8 * 2 ** 30, availableBytes: 6 * 2 ** 30 },
  workloadCount: 1,
  lastHeartbeatAt: '2025-01-01T00:00:00Z',
  ...extra,
});

test('formats bytes, durations and rates in binary units', () => {
  expect(VM.formatBytes(0)).toBe('0 B');
  expect(VM.formatBytes(1536)).toBe('1.50 KiB');
  expect(VM.formatBytes(16 * 2 ** 20)).toBe('16.0 MiB');
  expect(VM.formatBytes(300 * 2 ** 20)).toBe('300 MiB');
  expect(VM.formatBytes(-1)).toBe('–');
  expect(VM.formatDuration(420.4)).toBe('420 ms');
  expect(VM.formatDuration(1250)).toBe('1.25 s');
  expect(VM.formatDuration(125_000)).toBe('2 min 5 s');
  expect(VM.formatRate(2 * 2 ** 20)).toBe('2.00 MiB/s');
  expect(VM.formatRate(NaN)).toBe('–');
});

test('a host row: status, probes and memory; a lost host is lost even when cordoned', () => {
  const v = VM.hostView(host('h1'));
  expect(v).toMatchObject({ name: 'h1', status: 'alive', criuVersion: '4.1.1', criuUsable: true, memoryUsedBytes: 2 * 2 ** 30, memoryFreeBytes: 6 * 2 ** 30, memoryUsedFraction: 0.25, canDrain: true });
  expect(v.probes).toEqual([
    { name: 'criu check', ok: true },
    { name: 'dump + restore', ok: true, note: 'needs CRIU_FAULT=130' },
    { name: 'lazy pages', ok: false },
  ]);
  expect(VM.hostView(host('h2', { cordoned: true })).status).toBe('cordoned');
  const lost = VM.hostView(host('h3', { state: 'lost', cordoned: true }));
  expect(lost).toMatchObject({ status: 'lost', statusLabel: 'lost (cordoned)', canDrain: false });
  expect(VM.hostView(host('h4', { criu: { ...criu, version: '', usable: false, problem: 'criu not found' } }))).toMatchObject({ criuVersion: 'missing', criuUsable: false, criuProblem: 'criu not found' });
});

test('migration targets: alive, uncordoned, CRIU usable, not the workload’s own host', () => {
  const hosts = [host('h1'), host('h3'), host('h2'), host('h4', { cordoned: true }), host('h5', { state: 'lost' }), host('h6', { criu: { ...criu, usable: false } })];
  expect(VM.migrateTargets(hosts, 'h1')).toEqual(['h2', 'h3']);
});

test('live migrations: steps from lifecycle events, bytes and a rate from progress samples', () => {
  const live = new VM.LiveMigrations();
  const base = { type: 'migration', migrationId: 'm-1', workload: 'obs', from: 'h1', to: 'h2', figures: {} };
  live.lifecycle({ ...base, step: 'requested', state: 'running', at: '2025-01-01T00:00:00.000Z' });
  expect(live.runningFor('obs')).toMatchObject({ id: 'm-1', activity: 'pre-flight', bytes: 0, rateBps: null });
  live.lifecycle({ ...base, step: 'frozen', state: 'running', at: '2025-01-01T00:00:01.000Z', figures: { bytesTotal: 64 * 2 ** 20 } });
  live.progress({ migrationId: 'm-1', bytes: 0, atMs: 10_000 });
  live.progress({ migrationId: 'm-1', bytes: 8 * 2 ** 20, atMs: 10_500 });
  let e = live.progress({ migrationId: 'm-1', bytes: 16 * 2 ** 20, atMs: 11_000 });
  expect(e).toMatchObject({ activity: 'freeze + dump + transfer', bytes: 16 * 2 ** 20, bytesTotal: 64 * 2 ** 20 });
  expect(e.rateBps).toBeCloseTo(16 * 2 ** 20, 0);
  // Samples older than the window stop counting: the rate follows the recent pace.
  live.progress({ migrationId: 'm-1', bytes: 20 * 2 ** 20, atMs: 14_000 });
  e = live.progress({ migrationId: 'm-1', bytes: 24 * 2 ** 20, atMs: 15_000 });
  expect(e.rateBps).toBeCloseTo(4 * 2 ** 20, 0);
  live.lifecycle({ ...base, step: 'failed', state: 'failed', at: '2025-01-01T00:00:05.000Z', error: { code: 'RESTORE_FAILED', message: 'criu restore failed' }, figures: { bytesTransferred: 64 * 2 ** 20 } });
  expect(live.runningFor('obs')).toBeNull();
  expect(live.list()[0]).toMatchObject({ finished: true, state: 'failed', bytes: 64 * 2 ** 20, error: { code: 'RESTORE_FAILED' }, rateBps: null });
  // A late progress sample does not revive a finished migration.
  expect(live.progress({ migrationId: 'm-1', bytes: 1, atMs: 16_000 }).bytes).toBe(64 * 2 ** 20);
  expect(live.lifecycle({ type: 'host', step: 'cordoned', host: 'h1', figures: {} })).toBeNull();
});

const t = (ms: number) => new Date(Date.UTC(2025, 0, 1) + ms).toISOString();
const succeeded = {
  id: 'm-1',
  workload: 'obs',
  from: 'h1',
  to: 'h2',
  state: 'succeeded',
  requestedAt: t(0),
  finishedAt: t(2000),
  downtimeMs: 900,
  totalMs: 2000,
  bytesTransferred: 17 * 2 ** 20,
  phases: { dumpMs: 300, transferMs: 550, restoreMs: 400 },
  error: null,
  history: [
    { step: 'requested', at: t(0) },
    { step: 'preflight', at: t(10) },
    { step: 'receiving', at: t(200) },
    { step: 'checkpointing', at: t(400) },
    { step: 'restoring', at: t(1000) },
    { step: 'releasing', at: t(1400) },
    { step: 'done', at: t(1900) },
  ],
};

test('timeline of a finished migration: consecutive phases on one axis, downtime from the freeze', () => {
  const tl = VM.migrationTimeline(succeeded);
  expect(tl.totalMs).toBe(2000);
  expect(tl.segments.map((s: { phase: string; startMs: number; ms: number }) => [s.phase, s.startMs, s.ms])).toEqual([
    ['preflight', 0, 400],
    ['dump', 400, 300],
    ['transfer', 700, 300],
    ['restore', 1000, 400],
    ['release', 1400, 600],
  ]);
  expect(tl.segments[1].offsetFraction).toBeCloseTo(0.2);
  expect(tl.segments.reduce((a: number, s: { fraction: number }) => a + s.fraction, 0)).toBeCloseTo(1);
  expect(tl.downtime).toMatchObject({ startMs: 400, ms: 900, offsetFraction: 0.2 });
  expect(tl.bytes).toBe(17 * 2 ** 20);
});

test('timeline of a rolled-back migration: phases up to the failure, then the roll-back', () => {
  const m = {
    ...succeeded,
    state: 'rolled-back',
    downtimeMs: 800,
    phases: { dumpMs: 300, transferMs: 500, restoreMs: 0 },
    error: { code: 'RESTORE_FAILED', message: 'boom' },
    history: [
      { step: 'requested', at: t(0) },
      { step: 'checkpointing', at: t(400) },
      { step: 'restoring', at: t(1000) },
      { step: 'rolling-back', at: t(1200) },
    ],
  };
  const tl = VM.migrationTimeline(m);
  expect(tl.segments.map((s: { phase: string; ms: number }) => [s.phase, s.ms])).toEqual([
    ['preflight', 400],
    ['dump', 300],
    ['transfer', 300],
    ['restore', 200],
    ['rollback', 800],
  ]);
  expect(VM.migrationOutcome(m)).toBe('rolled-back: RESTORE_FAILED: boom');
  expect(VM.migrationOutcome(succeeded)).toBe('succeeded: obs now on h2, downtime 900 ms, 17.0 MiB moved');
});

test('downtime chart: points by finish time, y scaled to a round ceiling; unfinished ones left out', () => {
  const box = { width: 640, height: 200, pad: 40 };
  const ms = [
    { ...succeeded, id: 'm-2', finishedAt: t(60_000), downtimeMs: 1500 },
    succeeded,
    { ...succeeded, id: 'm-3', finishedAt: null, downtimeMs: 0 },
  ];
  const c = VM.downtimeChart(ms, box);
  expect(c.yMax).toBe(2000);
  expect(c.points.map((p: { id: string }) => p.id)).toEqual(['m-1', 'm-2']);
  expect(c.points[0]).toMatchObject({ x: 40, y: 40 + 120 - (900 / 2000) * 120 });
  expect(c.points[1]).toMatchObject({ x: 600, y: 40 + 120 - (1500 / 2000) * 120 });
  expect(c.path).toBe(`M40 ${c.points[0].y} L600 ${c.points[1].y}`);
  expect(c.yTicks.map((x: { label: string }) => x.label)).toEqual(['0 ms', '1.00 s', '2.00 s']);
  expect(VM.downtimeChart([], box)).toMatchObject({ points: [], path: '' });
  expect(VM.niceCeiling(0)).toBe(1);
  expect(VM.niceCeiling(3)).toBe(5);
  expect(VM.niceCeiling(2001)).toBe(5000);
});
