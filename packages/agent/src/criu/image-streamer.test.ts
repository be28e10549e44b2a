/**
 * The capture side of CRIU's image streamer (image-streamer.ts): a real `criu dump --stream` of a
 * workload holding memory, its pages handed over live and everything else drained into the dir,
 * restored from what arrived; and what a client that is not CRIU gets (hostile names, broken
 * framing, a second connection), with no descriptor left open.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { connect } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createLinuxSyscalls } from '@ferry/native';
import { ErrorCode, FerryError, silentLogger } from '@ferry/protocol';
import { spillLiveFiles } from '@ferry/transfer';
import { CriuDriver } from './criu-driver';
import { probeCriu } from './criu-probe';
import { CAPTURE_SOCKET_NAME, CaptureStreamer, isLiveImageName, requestedName } from './image-streamer';
import { readProcessStat, signalProcess, waitForExit } from '../host/process-tree';
import { launchWorkload, waitForWrapperExit, type LaunchedWorkload } from '../host/workload-launcher';

jest.setTimeout(90_000);

const sys = createLinuxSyscalls();
let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp('/dev/shm/ferry-streamer-');
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const openFds = async () => (await fs.readdir('/proc/self/fd')).length;

/** A request as CRIU frames it: 4-byte little-endian length, protobuf field 1 = the name. */
function request(name: string): Buffer {
  const bytes = Buffer.from(name);
  const message = Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
  const header = Buffer.alloc(4);
  header.writeUInt32LE(message.length, 0);
  return Buffer.concat([header, message]);
}

/**
 * A client that is not CRIU: python3 connects to the socket, writes `frames` (base64), and after
 * each sends a pipe's read end with one dummy byte, writing `payload` (its stdin) into the pipe.
 */
async function fakeCriu(socketPath: string, frames: Buffer[], payload: string): Promise<{ code: number | null; stderr: string }> {
  const script = `
import base64, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
payload = sys.stdin.buffer.read()
for b in sys.argv[2:]:
    s.sendall(base64.b64decode(b))
    r, w = os.pipe()
    socket.send_fds(s, [b'\\0'], [r])
    os.close(r)
    try:
        os.write(w, payload)
    except BrokenPipeError:
        pass
    os.close(w)
s.close()
`;
  const child = spawn('python3', ['-c', script, socketPath, ...frames.map((f) => f.toString('base64'))], { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin.end(payload);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { code, stderr };
}

async function failure(promise: Promise<unknown>): Promise<FerryError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof FerryError) return err;
    throw err;
  }
  throw new Error('expected a FerryError');
}

describe('requestedName', () => {
  it('reads the file name of a request CRIU frames', () => {
    expect(requestedName(request('pages-1.img').subarray(4))).toBe('pages-1.img');
    expect(isLiveImageName('pages-12.img')).toBe(true);
    expect(isLiveImageName('pagemap-12.img')).toBe(false);
  });

  it.each([
    ['no name field', Buffer.from([0x12, 0x01, 0x41])],
    ['a length past the end', Buffer.from([0x0a, 0x05, 0x41])],
    ['trailing bytes', Buffer.from([0x0a, 0x01, 0x41, 0x42])],
    ['a path', Buffer.concat([Buffer.from([0x0a, 6]), Buffer.from('../etc')])],
    ['a slash', Buffer.concat([Buffer.from([0x0a, 5]), Buffer.from('a/img')])],
    ['the socket itself', Buffer.concat([Buffer.from([0x0a, CAPTURE_SOCKET_NAME.length]), Buffer.from(CAPTURE_SOCKET_NAME)])],
    ['a runaway varint', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ])('refuses %s', (_what, message) => {
    expect(() => requestedName(message)).toThrow(expect.objectContaining({ code: ErrorCode.CHECKPOINT_FAILED }));
  });
});

describe('CaptureStreamer with a client that is not CRIU', () => {
  it('drains named files into the dir and hands pages over live', async () => {
    const before = await openFds();
    const streamer = await CaptureStreamer.listen(sys, dir, silentLogger);
    const live: { path: string; content: string }[] = [];
    const consuming = (async () => {
      for await (const file of streamer.liveFiles()) {
        const bytes = await promisify(execFile)('cat', [`/proc/self/fd/${file.fd}`]).catch(() => ({ stdout: '' }));
        live.push({ path: file.path, content: bytes.stdout });
      }
    })();
    const client = await fakeCriu(path.join(dir, CAPTURE_SOCKET_NAME), [request('core-1.img'), request('pages-1.img')], 'hello');
    expect(client).toMatchObject({ code: 0 });
    expect(await streamer.criuDone()).toMatchObject({ files: 2, live: 1, drainedBytes: 5 });
    streamer.finish();
    await consuming;
    expect(await fs.readFile(path.join(dir, 'core-1.img'), 'utf8')).toBe('hello');
    expect(live.map((f) => f.path)).toEqual(['pages-1.img']);
    // Only the drained image is left: the socket went when CRIU connected.
    expect(await fs.readdir(dir)).toEqual(['core-1.img']);
    expect(await openFds()).toBe(before);
  });

  it.each([
    ['a name that climbs out of the dir', [Buffer.concat([Buffer.from([6, 0, 0, 0, 0x0a, 4]), Buffer.from('../x')])], /not an image name/],
    ['an oversized request', [Buffer.from([0xff, 0xff, 0, 0])], /request of 65535 bytes: not CRIU/],
  ])('fails the capture on %s and leaves no file or descriptor behind', async (_what, frames, problem) => {
    const before = await openFds();
    const streamer = await CaptureStreamer.listen(sys, dir, silentLogger);
    await fakeCriu(path.join(dir, CAPTURE_SOCKET_NAME), frames, 'x');
    const err = await failure(streamer.criuDone());
    expect(err.code).toBe(ErrorCode.CHECKPOINT_FAILED);
    expect(err.message).toMatch(problem);
    expect(await fs.readdir(dir)).toEqual([]);
    expect(await fs.readdir(path.dirname(dir))).not.toContain('x');
    expect(await openFds()).toBe(before);
  });

  it('takes one connection only', async () => {
    const streamer = await CaptureStreamer.listen(sys, dir, silentLogger);
    const socketPath = path.join(dir, CAPTURE_SOCKET_NAME);
    const first = connect(socketPath);
    await new Promise((resolve) => first.once('connect', resolve));
    // The listener is gone once the first client is in.
    await expect(
      new Promise((resolve, reject) => {
        const second = connect(socketPath);
        second.once('connect', resolve);
        second.once('error', reject);
      }),
    ).rejects.toThrow(/ENOENT|ECONNREFUSED/);
    first.end();
    await streamer.criuDone();
    streamer.finish();
  });

  it('closes the pipes when the sender stops taking them, so the writer fails instead of blocking', async () => {
    const streamer = await CaptureStreamer.listen(sys, dir, silentLogger);
    const consuming = (async () => {
      // A sender that fails on its first live file: it asks for one and stops.
      const files = streamer.liveFiles();
      await files.next();
      await files.return(undefined);
    })();
    // 4 MiB into a pipe nobody reads after the break: the writer gets EPIPE, not a hang.
    const client = await fakeCriu(path.join(dir, CAPTURE_SOCKET_NAME), [request('pages-1.img')], 'y'.repeat(4 * 1024 * 1024));
    await consuming;
    expect(client.code).toBe(0);
    expect((await failure(streamer.criuDone())).message).toMatch(/stopped taking the dump/);
  });
});

describe('criu dump --stream through the CaptureStreamer', () => {
  let workload: LaunchedWorkload | undefined;
  let restoredPid: number | undefined;

  afterEach(async () => {
    for (const pid of [restoredPid, workload?.pid]) {
      if (pid !== undefined && (await readProcessStat(pid)) !== undefined) {
        signalProcess(pid, 'SIGKILL');
        await waitForExit(pid, 5000);
      }
    }
    if (workload) await waitForWrapperExit(workload, 5000);
    workload = undefined;
    restoredPid = undefined;
  });

  it('puts the memory pages on a live descriptor and the rest in the dir; the images restore, memory intact', async () => {
    const probe = await probeCriu({ workDir: path.join(dir, 'probe'), streamSyscalls: sys });
    expect(probe.stream).toBe(true);
    const criu = new CriuDriver({ faultInjection: probe.needsFaultInjection }, silentLogger);
    // 32 MiB of memory whose digest the workload prints on SIGUSR1.
    const program = [
      'import hashlib, os, signal, sys, time',
      'data = bytearray(os.urandom(1 << 20)) * 32',
      'def report(*_):',
      '    print(hashlib.sha256(data).hexdigest(), flush=True)',
      'signal.signal(signal.SIGUSR1, report)',
      'report()',
      'while True: time.sleep(0.01)',
    ].join('\n');
    const logPath = path.join(dir, 'workload.log');
    workload = await launchWorkload({ name: 'streamed', argv: ['python3', '-c', program], env: {}, cwd: dir, logPath });
    const readDigests = async () => (await fs.readFile(logPath, 'utf8')).split('\n').filter((l) => /^[0-9a-f]{64}$/.test(l));
    while ((await readDigests()).length === 0) await new Promise((r) => setTimeout(r, 20));
    const [digest] = await readDigests();

    const imagesDir = path.join(dir, 'images');
    await fs.mkdir(imagesDir, { mode: 0o700 });
    const streamer = await CaptureStreamer.listen(sys, imagesDir, silentLogger);
    const liveNames: string[] = [];
    const liveBytes = createHash('sha256');
    let liveTotal = 0;
    const spilled = spillLiveFiles(
      (async function* () {
        for await (const file of streamer.liveFiles()) {
          liveNames.push(file.path);
          yield file;
        }
      })(),
      imagesDir,
      () => undefined,
    );
    await criu.dump({ pid: workload.pid, imagesDir, leaveStopped: true, extraArgs: ['--stream'] });
    const counts = await streamer.criuDone();
    streamer.finish();
    await spilled;
    for (const name of liveNames) {
      const content = await fs.readFile(path.join(imagesDir, name));
      liveBytes.update(content);
      liveTotal += content.length;
    }
    expect(liveNames).toEqual(['pages-1.img']);
    expect(liveTotal).toBeGreaterThanOrEqual(32 * 1024 * 1024);
    expect(counts.live).toBe(1);
    expect(counts.drainedBytes).toBeLessThan(1024 * 1024);
    const names = await fs.readdir(imagesDir);
    expect(names).toEqual(expect.arrayContaining(['inventory.img', 'pstree.img']));
    expect(names.some((n) => n.startsWith('pagemap-'))).toBe(true);
    expect(names).not.toContain(CAPTURE_SOCKET_NAME);

    await criu.kill(workload.pid);
    const restored = await criu.restore({ imagesDir });
    restoredPid = restored.pid;
    signalProcess(restored.pid, 'SIGUSR1');
    while ((await readDigests()).length < 2) await new Promise((r) => setTimeout(r, 20));
    expect((await readDigests())[1]).toBe(digest);
  });
});
