import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { compileCriuDriverOptions, CriuDriver, DUMP_LOG_NAME, memoryBytesFromDumpStats } from './criu-driver';
import { probeCriu } from './criu-probe';
import { isAlive, listTree, readProcessStat, signalProcess, treeRssBytes, waitForExit } from '../host/process-tree';
import { launchWorkload, waitForWrapperExit, type LaunchedWorkload } from '../host/workload-launcher';
import {
  isConsecutive,
  livePidsWithArg,
  memoryCounterArgv,
  pipeCounterArgv,
  readCounters,
  readLines,
  sleep,
  waitFor,
} from '../test-fixtures/workload-fixtures';

jest.setTimeout(60_000);

/** tmpfs, like the agent's work dirs, so timings are those of a migration. */
const TEST_ROOT = '/dev/shm';
const COUNTER_INTERVAL_MS = 10;

let dir: string;
let defaultDriver: CriuDriver;
const launched: LaunchedWorkload[] = [];
const restored: { pid: number; startTime: number }[] = [];

beforeAll(async () => {
  // Run CRIU the way this host needs it (CRIU_FAULT=130 where hardware breakpoints fail), as the agent does.
  const info = await probeCriu();
  if (!info.usable) throw new Error(`CRIU is not usable here: ${info.problem}`);
  defaultDriver = new CriuDriver({ faultInjection: info.needsFaultInjection });
});

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(TEST_ROOT, 'ferry-criu-driver-'));
});

afterEach(async () => {
  for (const proc of restored.splice(0)) {
    if (await isAlive(proc.pid, proc.startTime)) await defaultDriver.kill(proc.pid);
  }
  for (const workload of launched.splice(0)) {
    if (await isAlive(workload.pid, workload.startTime)) await defaultDriver.kill(workload.pid);
    await waitForWrapperExit(workload, 5000);
  }
  expect(await livePidsWithArg(dir)).toEqual([]);
  await fs.rm(dir, { recursive: true, force: true });
});

async function launch(argv: string[]): Promise<LaunchedWorkload> {
  const workload = await launchWorkload({ name: 'fixture', argv, env: {}, cwd: dir, logPath: path.join(dir, 'workload.log') });
  launched.push(workload);
  return workload;
}

async function restore(imagesDir: string, driver = defaultDriver) {
  const result = await driver.restore({ imagesDir, pidFile: path.join(dir, 'restored.pid') });
  restored.push({ pid: result.pid, startTime: result.startTime });
  return result;
}

/** Waits until a counter file holds at least `count` numbers. */
async function waitForCounters(file: string, count: number): Promise<number[]> {
  return waitFor(`${count} counters in ${file}`, 20_000, async () => {
    const counters = await readCounters(file);
    return counters.length >= count ? counters : undefined;
  });
}

async function states(rootPid: number): Promise<string[]> {
  const pids = await listTree(rootPid);
  return Promise.all(pids.map(async (pid) => (await readProcessStat(pid))?.state ?? 'gone'));
}

/** Asks memory-counter.py to check its buffer against its seed and returns its answer. */
async function verifyMemory(pid: number, verifyFile: string): Promise<string> {
  const before = (await readLines(verifyFile)).length;
  signalProcess(pid, 'SIGUSR1');
  return waitFor('a verification result', 20_000, async () => (await readLines(verifyFile))[before]);
}

describe('CriuDriver with a 64 MiB workload', () => {
  it.each([
    ['as the probe decided', undefined],
    ['with CRIU_FAULT=130', true],
  ])('dumps, kills the frozen copy, restores (%s): memory intact, counter continues, one copy', async (mode, forceFault) => {
    const driver = forceFault ? new CriuDriver({ faultInjection: true }) : defaultDriver;
    const counterFile = path.join(dir, 'counter');
    const verifyFile = path.join(dir, 'verify');
    const workload = await launch(memoryCounterArgv({ mib: 64, seed: 20240917, intervalMs: COUNTER_INTERVAL_MS, counterFile, verifyFile }));
    await waitForCounters(counterFile, 20);
    expect(await verifyMemory(workload.pid, verifyFile)).toMatch(/^OK \d+$/);
    expect(await treeRssBytes(workload.pid)).toBeGreaterThanOrEqual(64 * 1024 * 1024);

    const imagesDir = path.join(dir, 'images');
    const dumped = await driver.dump({ pid: workload.pid, imagesDir, leaveStopped: true });
    expect(dumped.logPath).toBe(path.join(imagesDir, DUMP_LOG_NAME));
    expect((await fs.stat(imagesDir)).mode & 0o777).toBe(0o700);
    expect(await states(workload.pid)).toEqual(['T']);
    const atDump = await readCounters(counterFile);

    await driver.kill(workload.pid);
    expect(await isAlive(workload.pid)).toBe(false);
    expect(await waitForWrapperExit(workload, 5000)).toBe(true);
    expect(await readCounters(counterFile)).toEqual(atDump);

    const result = await restore(imagesDir, driver);
    expect(result.pid).not.toBe(workload.pid);
    const after = await waitForCounters(counterFile, atDump.length + 20);
    // Not restarted from 1, no gap, no repeat: the restored process carried on with its own counter.
    expect(after.slice(0, atDump.length)).toEqual(atDump);
    expect(after[atDump.length]).toBe((atDump[atDump.length - 1] as number) + 1);
    expect(isConsecutive(after)).toBe(true);
    expect(await verifyMemory(result.pid, verifyFile)).toMatch(/^OK \d+$/);
    expect(await livePidsWithArg(dir)).toEqual([result.pid]);
    expect(await treeRssBytes(result.pid)).toBeGreaterThanOrEqual(64 * 1024 * 1024);

    let imageBytes = 0;
    for (const file of await fs.readdir(imagesDir)) imageBytes += (await fs.stat(path.join(imagesDir, file))).size;
    console.log(
      `64 MiB workload ${mode}: criu dump ${dumped.durationMs.toFixed(0)} ms, criu restore ${result.durationMs.toFixed(0)} ms, ` +
        `images ${(imageBytes / 1024 / 1024).toFixed(1)} MiB on tmpfs`,
    );
  });

  it('dump then thaw: the tree stays frozen until thawed, then carries on', async () => {
    const counterFile = path.join(dir, 'counter');
    const workload = await launch(memoryCounterArgv({ mib: 1, seed: 7, intervalMs: COUNTER_INTERVAL_MS, counterFile, verifyFile: path.join(dir, 'verify') }));
    await waitForCounters(counterFile, 10);
    await defaultDriver.dump({ pid: workload.pid, imagesDir: path.join(dir, 'images'), leaveStopped: true });
    const atDump = await readCounters(counterFile);
    await sleep(300);
    expect(await readCounters(counterFile)).toEqual(atDump);
    expect(await states(workload.pid)).toEqual(['T']);

    expect(await defaultDriver.thaw(workload.pid)).toEqual([workload.pid]);
    const after = await waitForCounters(counterFile, atDump.length + 10);
    expect(isConsecutive(after)).toBe(true);
    // The unshare wrapper carries the same arguments and is still there: the workload never ended.
    expect((await livePidsWithArg(dir)).sort()).toEqual([workload.wrapperPid, workload.pid].sort());
    expect(await isAlive(workload.pid, workload.startTime)).toBe(true);
  });
});

describe('CriuDriver with a multi-process workload', () => {
  it('restores parent, child and the pipe between them', async () => {
    const counterFile = path.join(dir, 'counter');
    const workload = await launch(pipeCounterArgv({ intervalMs: COUNTER_INTERVAL_MS, counterFile }));
    await waitForCounters(counterFile, 20);
    expect(await listTree(workload.pid)).toHaveLength(2);

    const imagesDir = path.join(dir, 'images');
    await defaultDriver.dump({ pid: workload.pid, imagesDir, leaveStopped: true });
    expect(await states(workload.pid)).toEqual(['T', 'T']);
    const atDump = await readCounters(counterFile);
    await defaultDriver.kill(workload.pid);
    expect(await livePidsWithArg(dir)).toEqual([]);

    const result = await restore(imagesDir);
    const after = await waitForCounters(counterFile, atDump.length + 20);
    expect(after.slice(0, atDump.length)).toEqual(atDump);
    expect(isConsecutive(after)).toBe(true);
    const tree = await listTree(result.pid);
    expect(tree).toHaveLength(2);
    expect((await livePidsWithArg(dir)).sort()).toEqual([...tree].sort());
  });
});

describe('CriuDriver failures', () => {
  it('restore from an empty images dir fails with RESTORE_FAILED and CRIU error lines', async () => {
    const imagesDir = path.join(dir, 'empty');
    await fs.mkdir(imagesDir);
    const err = await defaultDriver.restore({ imagesDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FerryError);
    expect(err).toMatchObject({ code: ErrorCode.RESTORE_FAILED });
    expect((err as FerryError).message).toMatch(/exit status 1/);
    expect((err as FerryError).details.length).toBeGreaterThan(0);
    for (const line of (err as FerryError).details) expect(line).toMatch(/Error \(/);
    expect((err as FerryError).details.join('\n')).not.toMatch(/RLIMIT_NOFILE/);
  });

  it('restore from a corrupted image fails with RESTORE_FAILED and CRIU error lines', async () => {
    const workload = await launch(['/bin/sleep', '30']);
    const imagesDir = path.join(dir, 'images');
    await defaultDriver.dump({ pid: workload.pid, imagesDir, leaveStopped: true });
    await defaultDriver.kill(workload.pid);
    const core = (await fs.readdir(imagesDir)).find((f) => /^core-\d+\.img$/.test(f));
    expect(core).toBeDefined();
    await fs.truncate(path.join(imagesDir, core as string), 6);
    const err = await defaultDriver.restore({ imagesDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.RESTORE_FAILED });
    expect((err as FerryError).details.some((l) => /Error \(/.test(l))).toBe(true);
    expect(await livePidsWithArg(dir)).toEqual([]);
  });

  it('dump of a process whose session leader is outside the tree fails with CHECKPOINT_FAILED and leaves it running', async () => {
    // Spawned straight from Node: it shares the test runner's session, which CRIU cannot dump.
    const child = spawn('/bin/sleep', ['30'], { stdio: 'ignore' });
    const pid = child.pid as number;
    try {
      const err = await defaultDriver.dump({ pid, imagesDir: path.join(dir, 'images') }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: ErrorCode.CHECKPOINT_FAILED });
      expect((err as FerryError).details.some((l) => /Error \(/.test(l))).toBe(true);
      expect(await fs.stat(path.join(dir, 'images', DUMP_LOG_NAME))).toBeTruthy();
      expect((await readProcessStat(pid))?.state).toMatch(/[SR]/);
    } finally {
      child.kill('SIGKILL');
      await waitForExit(pid, 5000);
    }
  });

  it('dump of a gone pid is NOT_FOUND; kill of a gone pid is a no-op', async () => {
    const workload = await launch(['/bin/sleep', '30']);
    await defaultDriver.kill(workload.pid);
    await expect(defaultDriver.dump({ pid: workload.pid, imagesDir: path.join(dir, 'images') })).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
    await expect(defaultDriver.kill(workload.pid)).resolves.toBeUndefined();
    await expect(defaultDriver.thaw(workload.pid)).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
  });

  it('refuses criu older than 4 and a missing criu with FAILED_PRECONDITION', async () => {
    const fake = path.join(dir, 'old-criu');
    await fs.writeFile(fake, '#!/bin/sh\necho "Version: 3.17"\n', { mode: 0o755 });
    const old = new CriuDriver({ criuPath: fake });
    expect(await old.version()).toBe('3.17');
    await expect(old.ensureSupportedVersion()).rejects.toMatchObject({ code: ErrorCode.FAILED_PRECONDITION });
    await expect(old.restore({ imagesDir: dir })).rejects.toMatchObject({ code: ErrorCode.FAILED_PRECONDITION });
    const missing = new CriuDriver({ criuPath: path.join(dir, 'no-such-criu') });
    await expect(missing.ensureSupportedVersion()).rejects.toMatchObject({ code: ErrorCode.FAILED_PRECONDITION });
    expect(await defaultDriver.ensureSupportedVersion()).toMatch(/^4\./);
  });
});

describe('CriuDriver options', () => {
  it('runs criu with CRIU_FAULT=130 when faultInjection is set', async () => {
    const faulty = new CriuDriver({ faultInjection: true });
    const workload = await launch(['/bin/sleep', '30']);
    const imagesDir = path.join(dir, 'images');
    const dumped = await faulty.dump({ pid: workload.pid, imagesDir, leaveStopped: true });
    // CRIU notes the fault injection it obeys in its log.
    expect(await fs.readFile(dumped.logPath, 'utf8')).toMatch(/Force no-breakpoints restore/);
    await faulty.kill(workload.pid);
    const result = await faulty.restore({ imagesDir });
    restored.push({ pid: result.pid, startTime: result.startTime });
    expect(await isAlive(result.pid, result.startTime)).toBe(true);
  });

  it('validates options', () => {
    const invalid = expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT });
    expect(() => compileCriuDriverOptions({ criuPath: 'bin/criu' })).toThrow(invalid);
    expect(() => compileCriuDriverOptions({ logLevel: 5 })).toThrow(invalid);
    expect(() => compileCriuDriverOptions({ ghostLimitBytes: -1 })).toThrow(invalid);
    expect(() => compileCriuDriverOptions({ commandTimeoutMs: 0 })).toThrow(invalid);
    expect(compileCriuDriverOptions({ criuPath: 'criu' }).criuPath).toBe('criu');
  });
});

describe('dump statistics', () => {
  test('memory bytes come from --display-stats "Memory pages written", in 4 KiB pages', () => {
    const out = 'Displaying dump stats:\nMemory pages scanned: 67352 (0x10718)\nMemory pages written: 67255 (0x106b7)\nLazy memory pages: 0 (0x0)\n';
    expect(memoryBytesFromDumpStats(out)).toBe(67255 * 4096);
    expect(memoryBytesFromDumpStats('no stats here')).toBeNull();
  });
});
