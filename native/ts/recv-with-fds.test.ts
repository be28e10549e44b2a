import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  RECV_WITH_FDS_MAX_BYTES,
  RECV_WITH_FDS_MAX_FDS,
  SHUT_RD,
  createLinuxSyscalls,
  socketFd,
  SyscallArgumentError,
  SyscallError,
  type ReceivedWithFds,
} from './index';
import { loadNativeBinding } from './native-binding';

const sys = createLinuxSyscalls();
// fdinfo's flags are octal.
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

const fds: number[] = [];
const sockets: net.Socket[] = [];
const servers: net.Server[] = [];
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-native-recv-'));
});

afterEach(() => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) server.close();
  for (const fd of fds.splice(0)) sys.close(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

function pair(): [number, number] {
  const ends = sys.socketpair();
  fds.push(...ends);
  return ends;
}

/** Closes an fd `pair()` handed out before the test ends (the peer must see end of stream). */
function closeNow(fd: number): void {
  fds.splice(fds.indexOf(fd), 1);
  sys.close(fd);
}

function fdFlags(fd: number): number {
  return parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8);
}

/**
 * The sending side, as CRIU is: a python3 child (socket.send_fds is sendmsg with SCM_RIGHTS). With
 * `fd`, the child gets it as its fd 3, `s` in the script, and this process's copy is closed (so the
 * child's exit is the stream's end). Resolves with what the child printed, once it has exited.
 */
function python(script: string, options: { fd?: number; args?: string[] } = {}): Promise<string> {
  const prelude = 'import os, socket, struct, sys\n' + (options.fd === undefined ? '' : 's = socket.socket(fileno=3)\n');
  const stdio: ('ignore' | 'pipe' | 'inherit' | number)[] = ['ignore', 'pipe', 'inherit'];
  if (options.fd !== undefined) stdio.push(options.fd);
  const child = spawn('python3', ['-c', prelude + script, ...(options.args ?? [])], { stdio });
  // spawn() has returned: the child holds its copy already.
  if (options.fd !== undefined) closeNow(options.fd);
  let out = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`python3 exited with ${code}: ${out}`))));
  });
}

/** recvWithFds until end of stream; every call's result, the final empty one included. */
async function receiveAll(fd: number, maxBytes: number, maxFds: number): Promise<ReceivedWithFds[]> {
  const calls: ReceivedWithFds[] = [];
  for (;;) {
    const received = await sys.recvWithFds(fd, maxBytes, maxFds);
    fds.push(...received.fds);
    calls.push(received);
    if (received.bytes.length === 0) return calls;
  }
}

/** Everything a blocking pipe end gives until end of file. */
function readToEnd(fd: number): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(4096);
  for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) chunks.push(Buffer.from(buf.subarray(0, n)));
  return Buffer.concat(chunks).toString();
}

function isPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return new Promise((resolve) => setTimeout(() => resolve(!settled), ms));
}

describe('recvWithFds', () => {
  it("receives CRIU's request and the pipe it sends with it; the pipe works, and the stream ends empty", async () => {
    const [mine, theirs] = pair();
    // As CRIU's image streaming does it: a little-endian length and the request, then the pipe's
    // read end with a 1-byte dummy payload (sendmsg + SCM_RIGHTS); then the image, into the pipe.
    const sender = python(
      `req = b'pages-1.img'
s.sendall(struct.pack('<I', len(req)) + req)
r, w = os.pipe()
socket.send_fds(s, [b'\\0'], [r])
os.close(r)
os.write(w, b'image bytes through the pipe')
os.close(w)`,
      { fd: theirs },
    );
    const calls = await receiveAll(mine, 64 * 1024, 4);
    await sender;

    const bytes = Buffer.concat(calls.map((c) => c.bytes));
    const request = Buffer.from('pages-1.img');
    expect(bytes.readUInt32LE(0)).toBe(request.length);
    expect(bytes.subarray(4)).toEqual(Buffer.concat([request, Buffer.from([0])]));
    const withFds = calls.filter((c) => c.fds.length > 0);
    expect(withFds.length).toBe(1);
    // The descriptor came with the read that returned the byte it was sent with: that read ends there.
    expect(withFds[0].bytes.at(-1)).toBe(0);
    expect(calls.at(-1)).toEqual({ bytes: Buffer.alloc(0), fds: [] });

    const [pipe] = withFds[0].fds;
    expect(fs.readlinkSync(`/proc/self/fd/${pipe}`)).toMatch(/^pipe:/);
    expect(fdFlags(pipe) & O_CLOEXEC).toBe(O_CLOEXEC);
    expect(readToEnd(pipe)).toBe('image bytes through the pipe');
  });

  it("waits on a net.Server's accepted (non-blocking) socket, taken with socketFd, and takes exactly maxFds", async () => {
    const address = path.join(dir, 'streamer.sock');
    const accepted = new Promise<net.Socket>((resolve) => {
      const server = net.createServer({ pauseOnConnect: true }, resolve);
      servers.push(server);
      server.listen(address);
    });
    await new Promise((resolve) => servers[0].once('listening', resolve));
    // Sends only after a pause, so the call below is already waiting (EAGAIN, then poll).
    const sender = python(
      `import time
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sys.argv[1])
time.sleep(0.3)
r, w = os.pipe()
socket.send_fds(c, [b'two ends'], [r, w])`,
      { args: [address] },
    );
    const socket = await accepted;
    sockets.push(socket);
    const fd = socketFd(socket);
    expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);

    const calls = await receiveAll(fd, 1024, 2);
    await sender;
    expect(calls.map((c) => c.bytes.toString())).toEqual(['two ends', '']);
    const [r, w] = calls[0].fds;
    // Both ends of one pipe: what goes into the one comes out of the other.
    fs.writeSync(w, 'round trip');
    const buf = Buffer.alloc(64);
    expect(buf.subarray(0, fs.readSync(r, buf, 0, buf.length, null)).toString()).toBe('round trip');
  });

  it('returns a partial read when maxBytes is smaller than what waits, and the rest on the next call', async () => {
    const [mine, theirs] = pair();
    fs.writeSync(theirs, 'abcdefgh');
    closeNow(theirs);
    const calls = await receiveAll(mine, 3, 1);
    expect(calls.map((c) => c.bytes.toString())).toEqual(['abc', 'def', 'gh', '']);
    expect(calls.flatMap((c) => c.fds)).toEqual([]);
  });

  it('descriptors come with the first byte sent with them; that read ends at their last byte at the latest', async () => {
    const [mine, theirs] = pair();
    // Plain bytes and bytes with a descriptor, by turns, all queued before the first read.
    const sender = python(
      `r, w = os.pipe()
s.sendall(b'xy')
socket.send_fds(s, [b'ab'], [r])
s.sendall(b'zz')
socket.send_fds(s, [b'cd'], [w])
s.sendall(b'ww')
print('sent')`,
      { fd: theirs },
    );
    expect(await sender).toBe('sent\n');
    const reads: [string, number][] = [];
    for (const maxBytes of [64, 3, 64, 64]) {
      const { bytes, fds: received } = await sys.recvWithFds(mine, maxBytes, 1);
      fds.push(...received);
      reads.push([bytes.toString(), received.length]);
    }
    expect(reads).toEqual([
      // The plain bytes before them join the read; the read stops after the bytes sent with the fd.
      ['xyab', 1],
      // Cut short by maxBytes: the fd comes with its first byte, the rest of its bytes follow plain.
      ['zzc', 1],
      ['dww', 0],
      ['', 0],
    ]);
  });

  it('wakes a call blocked on a silent peer when the socket is shut down for reading: end of stream', async () => {
    const [mine] = pair();
    const call = sys.recvWithFds(mine, 16, 1);
    expect(await isPending(call, 200)).toBe(true);
    sys.shutdown(mine, SHUT_RD);
    expect(await call).toEqual({ bytes: Buffer.alloc(0), fds: [] });
  });

  it('wakes a blocked call when the peer closes', async () => {
    const [mine, theirs] = pair();
    const call = sys.recvWithFds(mine, 16, 1);
    expect(await isPending(call, 100)).toBe(true);
    closeNow(theirs);
    expect(await call).toEqual({ bytes: Buffer.alloc(0), fds: [] });
  });

  it('more descriptors than maxFds: closes every one that arrived and rejects EMSGSIZE', async () => {
    const [mine, theirs] = pair();
    // Two pipes' read ends, with maxFds 1 (an odd count, where CMSG_SPACE would have had room for
    // a second one). Once the test has answered, the child writes to both pipes: EPIPE for each
    // proves no read end survived anywhere.
    const sender = python(
      `ends = [os.pipe() for _ in range(2)]
socket.send_fds(s, [b'x'], [r for r, _ in ends])
for r, _ in ends:
    os.close(r)
assert s.recv(1) == b'g'
for _, w in ends:
    try:
        os.write(w, b'?')
        print('written')
    except BrokenPipeError:
        print('EPIPE')`,
      { fd: theirs },
    );
    const openBefore = fs.readdirSync('/proc/self/fd').length;
    const outcome = await sys.recvWithFds(mine, 16, 1).then(
      () => undefined,
      (err: unknown) => err,
    );
    const openAfter = fs.readdirSync('/proc/self/fd').length;
    expect(outcome).toBeInstanceOf(SyscallError);
    expect(outcome).toMatchObject({ code: 'EMSGSIZE', syscall: 'recvmsg' });
    expect((outcome as Error).message).toMatch(/maxFds \(1\)/);
    expect(openAfter).toBe(openBefore);
    fs.writeSync(mine, 'g');
    expect(await sender).toBe('EPIPE\nEPIPE\n');
    // The bytes sent with them went too: what is left is the end of the stream.
    expect(await sys.recvWithFds(mine, 16, 1)).toEqual({ bytes: Buffer.alloc(0), fds: [] });
  });

  it('reports kernel refusals with errno and the call that made them', async () => {
    await expect(sys.recvWithFds(987_654, 16, 1)).rejects.toMatchObject({ code: 'EBADF', syscall: 'recvmsg' });
    const file = fs.openSync('/dev/null', 'r');
    fds.push(file);
    const error = await sys.recvWithFds(file, 16, 1).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toMatchObject({ code: 'ENOTSOCK', syscall: 'recvmsg' });
  });

  it('checks its arguments in TypeScript, and again in the addon, before any call', async () => {
    const [mine] = pair();
    for (const [fd, maxBytes, maxFds, argument] of [
      [-1, 16, 1, 'fd'],
      [1.5, 16, 1, 'fd'],
      [mine, 0, 1, 'maxBytes'],
      [mine, RECV_WITH_FDS_MAX_BYTES + 1, 1, 'maxBytes'],
      [mine, 2.5, 1, 'maxBytes'],
      [mine, 16, 0, 'maxFds'],
      [mine, 16, RECV_WITH_FDS_MAX_FDS + 1, 'maxFds'],
    ] as const) {
      const error = await sys.recvWithFds(fd, maxBytes, maxFds).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(SyscallArgumentError);
      expect(error).toMatchObject({ syscall: 'recvmsg', argument });
    }
    expect(RECV_WITH_FDS_MAX_BYTES).toBe(1024 * 1024);
    expect(RECV_WITH_FDS_MAX_FDS).toBe(64);
    // The addon's own bounds, should TypeScript be bypassed: a TypeError, and no call queued.
    const native = loadNativeBinding();
    expect(() => native.recvWithFds(mine, 0, 1)).toThrow(/maxBytes/);
    expect(() => native.recvWithFds(mine, RECV_WITH_FDS_MAX_BYTES + 1, 1)).toThrow(/maxBytes/);
    expect(() => native.recvWithFds(mine, 16, RECV_WITH_FDS_MAX_FDS + 1)).toThrow(/maxFds/);
    expect(() => native.recvWithFds(mine, 16, 0)).toThrow(/maxFds/);
  });
});
