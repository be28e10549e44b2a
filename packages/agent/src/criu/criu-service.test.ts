/**
 * The target-side criu helpers against real CRIU: a dump sent to a `criu page-server`, then a lazy
 * restore served by `criu lazy-pages` from those images. Memory intact, counter continuing. The
 * page server over mutual TLS with per-migration certificates: a dump with them works, a client
 * without them is refused.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { ErrorCode } from '@ferry/protocol';
import { CriuDriver } from './criu-driver';
import { probeCriu } from './criu-probe';
import { LazyPagesDaemon, PageServer, sumPageImageBytes } from './criu-service';
import { criuTlsArgs, makePageServerTls, writePageServerClientTls } from './page-server-tls';
import { isAlive, signalProcess } from '../host/process-tree';
import { launchWorkload, waitForWrapperExit, type LaunchedWorkload } from '../host/workload-launcher';
import { isConsecutive, livePidsWithArg, memoryCounterArgv, readCounters, readLines, waitFor } from '../test-fixtures/workload-fixtures';

jest.setTimeout(60_000);

const MIB = 1024 * 1024;
let driver: CriuDriver;
let dir: string;
let workload: LaunchedWorkload | undefined;
let restoredPid: { pid: number; startTime: number } | undefined;

beforeAll(async () => {
  const info = await probeCriu();
  if (!info.usable) throw new Error(`CRIU is not usable here: ${info.problem}`);
  driver = new CriuDriver({ faultInjection: info.needsFaultInjection });
});

beforeEach(async () => {
  dir = await fs.mkdtemp('/dev/shm/ferry-criu-service-');
});

afterEach(async () => {
  if (restoredPid && (await isAlive(restoredPid.pid, restoredPid.startTime))) await driver.kill(restoredPid.pid);
  if (workload) {
    if (await isAlive(workload.pid, workload.startTime)) await driver.kill(workload!.pid);
    await waitForWrapperExit(workload, 5000);
  }
  workload = undefined;
  restoredPid = undefined;
  expect(await livePidsWithArg(dir)).toEqual([]);
  await fs.rm(dir, { recursive: true, force: true });
});

async function counters(file: string, count: number): Promise<number[]> {
  return waitFor(`${count} counters`, 20_000, async () => {
    const c = await readCounters(file);
    return c.length >= count ? c : undefined;
  });
}

/** Launches the memory-counter fixture (`mib` of known memory) and waits for its first `ticks` counters. */
async function launchFixture(mib: number, seed: number, ticks: number): Promise<{ counterFile: string; verifyFile: string }> {
  const counterFile = path.join(dir, 'counter');
  const verifyFile = path.join(dir, 'verify');
  workload = await launchWorkload({
    name: 'fixture',
    argv: memoryCounterArgv({ mib, seed, intervalMs: 10, counterFile, verifyFile }),
    env: {},
    cwd: dir,
    logPath: path.join(dir, 'workload.log'),
  });
  await counters(counterFile, ticks);
  return { counterFile, verifyFile };
}

test('pages go to the page server, the rest stays with the dump; a lazy restore from both carries on intact', async () => {
  const { counterFile, verifyFile } = await launchFixture(32, 7, 20);
  const src = path.join(dir, 'src');
  const dst = path.join(dir, 'dst');
  await fs.mkdir(dst, { mode: 0o700 });

  const server = await PageServer.start(driver, dst, '127.0.0.1');
  expect(server.port).toBeGreaterThan(0);
  await driver.dump({ pid: workload!.pid, imagesDir: src, leaveStopped: true, extraArgs: ['--page-server', '--address', '127.0.0.1', '--port', String(server.port)] });
  await server.done;
  expect(await sumPageImageBytes(src)).toBe(0);
  expect(await sumPageImageBytes(dst)).toBeGreaterThanOrEqual(32 * MIB);
  const atDump = await readCounters(counterFile);
  await driver.kill(workload!.pid);
  for (const f of await fs.readdir(src)) {
    if (f.endsWith('.img') && !(await fs.stat(path.join(dst, f)).catch(() => null))) await fs.copyFile(path.join(src, f), path.join(dst, f));
  }

  const lazy = await LazyPagesDaemon.start(driver, dst);
  const restored = await driver.restore({ imagesDir: dst, pidFile: path.join(dst, 'restored.pid'), extraArgs: ['--lazy-pages'] });
  restoredPid = { pid: restored.pid, startTime: restored.startTime };
  await lazy.done;
  const after = await counters(counterFile, atDump.length + 20);
  expect(after.slice(0, atDump.length)).toEqual(atDump);
  expect(isConsecutive(after)).toBe(true);
  const before = (await readLines(verifyFile)).length;
  signalProcess(restored.pid, 'SIGUSR1');
  expect(await waitFor('verification', 20_000, async () => (await readLines(verifyFile))[before])).toMatch(/^OK \d+$/);
});

test('a page server that is stopped before any dump fails its done with TRANSFER_FAILED', async () => {
  const server = await PageServer.start(driver, dir, '127.0.0.1');
  server.stop();
  await expect(server.done).rejects.toMatchObject({ code: ErrorCode.TRANSFER_FAILED });
});

describe('page server over mutual TLS (page-server-tls.ts)', () => {
  test('the probe finds TLS usable here (criu with GnuTLS, openssl)', async () => {
    const info = await probeCriu();
    expect(info.pageServerTls).toBe(true);
  });

  test('a dump with the client credentials fills the page server over a completed TLS handshake', async () => {
    await launchFixture(16, 11, 10);
    const src = path.join(dir, 'src');
    const dst = path.join(dir, 'dst');
    await fs.mkdir(dst, { mode: 0o700 });
    const made = await makePageServerTls(path.join(dir, 'server-tls'), '127.0.0.1');
    // Only the CA's certificate and the server's own files stay on the target; the CA key is gone.
    expect((await fs.readdir(path.join(dir, 'server-tls'))).filter((f) => f.endsWith('.key'))).toEqual(['server.key']);
    expect((await fs.stat(path.join(dir, 'server-tls'))).mode & 0o777).toBe(0o700);
    const server = await PageServer.start(driver, dst, '127.0.0.1', undefined, made.server);
    const clientFiles = await writePageServerClientTls(path.join(dir, 'client-tls'), made.client);
    const dumped = await driver.dump({
      pid: workload!.pid,
      imagesDir: src,
      leaveStopped: true,
      extraArgs: ['--page-server', '--address', '127.0.0.1', '--port', String(server.port), ...criuTlsArgs(clientFiles)],
    });
    await server.done;
    expect(await sumPageImageBytes(dst)).toBeGreaterThanOrEqual(16 * MIB);
    // The source learns what it sent from CRIU's stats: exactly what the page server wrote.
    expect(dumped.memoryBytesWritten).toBe(await sumPageImageBytes(dst));
    expect(await fs.readFile(path.join(src, 'dump.log'), 'utf8')).toMatch(/TLS handshake completed/);
  });

  test('a client without a certificate of the migration CA is refused', async () => {
    const made = await makePageServerTls(path.join(dir, 'server-tls'), '127.0.0.1');
    const other = await makePageServerTls(path.join(dir, 'other-tls'), '127.0.0.1');
    for (const creds of [undefined, other.client]) {
      const dst = path.join(dir, `dst-${creds ? 'other' : 'none'}`);
      await fs.mkdir(dst, { mode: 0o700 });
      const server = await PageServer.start(driver, dst, '127.0.0.1', undefined, made.server);
      const socket = tls.connect({
        host: '127.0.0.1',
        port: server.port,
        ca: made.client.caCert,
        ...(creds ? { cert: creds.cert, key: creds.key } : {}),
        checkServerIdentity: () => undefined,
      });
      socket.on('error', () => undefined);
      // The server ends the handshake (no certificate, or one it does not trust) and exits failed.
      await expect(server.done).rejects.toMatchObject({ code: ErrorCode.TRANSFER_FAILED });
      socket.destroy();
      expect(await sumPageImageBytes(dst)).toBe(0);
    }
  });
});
