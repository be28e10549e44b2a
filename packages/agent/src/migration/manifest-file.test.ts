import { constants as fsConstants } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_FILE, MAX_MANIFEST_BYTES } from '@ferry/protocol';
import type { WorkloadRecord } from '../workloads/inventory';
import { checkManifestForTarget, LOG_COPY_FILE, manifestIn, pinProblem, readManifest, writeManifest } from './manifest-file';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-manifest-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function record(overrides: Partial<WorkloadRecord> = {}): WorkloadRecord {
  return {
    name: 'web',
    pid: 123,
    startTime: 1,
    argv: ['/bin/sleep', '100'],
    env: { A: '1' },
    cwd: '/',
    logPath: join(dir, 'output.log'),
    state: 'frozen',
    startedAt: '2026-12-02T00:00:00.000Z',
    exitCode: null,
    migration: null,
    mounts: [],
    ...overrides,
  };
}

test('what the source writes, the target reads back, with the log copy beside it', async () => {
  await writeFile(join(dir, 'output.log'), 'tick 1\n');
  const pins = [{ key: 'file[1a:2b]', pinPath: '/srv/shared/.ferry-pin-m1-1', flags: 2, pos: 10 }];
  await writeManifest(dir, record({ address: '198.18.0.50/24' }), pins);
  const m = await readManifest(dir, 'web');
  expect(m).toEqual(expect.objectContaining({ name: 'web', argv: ['/bin/sleep', '100'], logBytes: 7, pins, address: '198.18.0.50/24' }));
  expect((await manifestIn(dir)).pins).toEqual(pins);
  const { readFile } = await import('node:fs/promises');
  expect(await readFile(join(dir, LOG_COPY_FILE), 'utf8')).toBe('tick 1\n');
});

test('an image of another workload is refused', async () => {
  await writeManifest(dir, record(), []);
  await expect(readManifest(dir, 'db')).rejects.toMatchObject({ code: 'RESTORE_FAILED', message: expect.stringMatching(/image is of web/) });
});

test('a manifest that fails its schema (a relative log path, a bogus pin key) is refused, not acted on', async () => {
  const good = { name: 'web', argv: ['x'], env: {}, cwd: '/', logPath: '/var/log/x', startedAt: 'now', logBytes: 0, mounts: [], pins: [] };
  for (const bad of [
    { ...good, logPath: 'relative/log' },
    { ...good, logPath: '/var/../etc/shadow' },
    { ...good, pins: [{ key: 'not-a-key', pinPath: '/srv/x', flags: 0, pos: 0 }] },
    { ...good, address: '127.0.0.1/8' },
    'not an object',
  ]) {
    await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(bad));
    await expect(readManifest(dir, 'web')).rejects.toMatchObject({ code: 'RESTORE_FAILED' });
    // Cleanup reads what it can and never acts on what fails the schema.
    expect((await manifestIn(dir)).logPath === 'relative/log').toBe(false);
  }
});

test('a manifest larger than the bound is refused without being parsed', async () => {
  await writeFile(join(dir, MANIFEST_FILE), Buffer.alloc(MAX_MANIFEST_BYTES + 10, 0x20));
  await expect(readManifest(dir, 'web')).rejects.toMatchObject({ code: 'RESTORE_FAILED', message: expect.stringMatching(/larger than/) });
  expect(await manifestIn(dir)).toEqual({});
});

test('no manifest at all: cleanup finds nothing to do', async () => {
  expect(await manifestIn(dir)).toEqual({});
  await expect(readManifest(dir, 'web')).rejects.toMatchObject({ code: 'RESTORE_FAILED' });
});

describe('a manifest from another host is held against what the target derives itself', () => {
  const expect_ = { migrationId: 'm-1', dataDir: '/var/lib/ferry', mountRoots: ['/srv/shared'] };
  const good = {
    name: 'web',
    argv: ['x'],
    env: {},
    cwd: '/',
    logPath: '/var/lib/ferry/workloads/web/output.log',
    startedAt: 'now',
    logBytes: 0,
    mounts: [],
    pins: [{ key: 'file[1a:2b]', pinPath: '/srv/shared/data/.ferry-pin-m-1-2b', flags: 2, pos: 0 }],
  };

  test('a manifest that matches is accepted', () => {
    expect(() => checkManifestForTarget(good, expect_)).not.toThrow();
  });

  test('a service address the coordinator did not give (root would configure and announce it) is refused', () => {
    expect(() => checkManifestForTarget({ ...good, address: '198.18.0.77/24' }, expect_)).toThrow(expect.objectContaining({ code: 'RESTORE_FAILED', message: expect.stringMatching(/service address 198.18.0.77\/24/) }));
    expect(() => checkManifestForTarget({ ...good, address: '198.18.0.77/24' }, { ...expect_, address: '198.18.0.77/24' })).not.toThrow();
    expect(() => checkManifestForTarget(good, { ...expect_, address: '198.18.0.77/24' })).toThrow(expect.objectContaining({ code: 'RESTORE_FAILED' }));
  });

  test('a log path elsewhere (root would copy the log there) is refused', () => {
    expect(() => checkManifestForTarget({ ...good, logPath: '/etc/cron.d/evil' }, expect_)).toThrow(
      expect.objectContaining({ code: 'RESTORE_FAILED', message: expect.stringMatching(/log path \/etc\/cron.d\/evil/) }),
    );
  });

  test('pins that are not this migration\'s (root would open, truncate or unlink them) are refused', () => {
    for (const pinPath of ['/etc/passwd', '/srv/shared/.ferry-pin-m-2-2b', '/srv/sharedX/.ferry-pin-m-1-2b', '/srv/shared/.ferry-pin-m-1-2b/../x']) {
      expect(() => checkManifestForTarget({ ...good, pins: [{ ...good.pins[0], pinPath }] }, expect_)).toThrow(expect.objectContaining({ code: 'RESTORE_FAILED' }));
    }
    for (const flags of [fsConstants.O_CREAT | 2, fsConstants.O_TRUNC | 1]) {
      expect(pinProblem({ ...good.pins[0], flags }, expect_)).toMatch(/create\/truncate/);
    }
  });
});

test('a manifest naming mounts the coordinator did not give is refused (the target records only the coordinator\'s)', () => {
  const expect_ = { migrationId: 'm-1', dataDir: '/var/lib/ferry', mountRoots: ['/srv/shared'] };
  const m = { name: 'web', argv: ['x'], env: {}, cwd: '/', logPath: '/var/lib/ferry/workloads/web/output.log', startedAt: 'now', logBytes: 0, pins: [] };
  const shared = { name: 'shared', type: 'sshfs' as const, source: 'storage:/srv', options: {}, path: '/srv/shared' };
  expect(() => checkManifestForTarget({ ...m, mounts: [shared] }, expect_)).not.toThrow();
  const evil = { ...shared, name: 'evil', options: { ssh_command: 'touch /tmp/owned' }, path: '/mnt/evil' };
  expect(() => checkManifestForTarget({ ...m, mounts: [shared, evil] }, expect_)).toThrow(
    expect.objectContaining({ code: 'RESTORE_FAILED', message: expect.stringMatching(/mount evil at \/mnt\/evil is not one the coordinator gave/) }),
  );
});
