import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';

import {
  buildPageIndex,
  PAGE_DELTA_HEAD_BYTES,
  PAGE_DELTA_MAGIC,
  PAGE_DELTA_OP,
  PAGE_DELTA_PAGE_BYTES as PAGE,
  PAGE_HASH_BYTES,
  SHUT_WR,
  SyscallArgumentError,
  createLinuxSyscalls,
  type PageIndex,
} from './index';

const sys = createLinuxSyscalls();

const fds: number[] = [];
const sockets: net.Socket[] = [];
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const fd of fds.splice(0)) sys.close(fd);
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A socketpair: `fd` for the native side (closed after the test), `socket` (the other end) for the test. */
function endpoint(): { fd: number; socket: net.Socket } {
  const [fd, other] = sys.socketpair();
  fds.push(fd);
  const socket = new net.Socket({ fd: other, readable: true, writable: true });
  socket.on('error', () => undefined);
  sockets.push(socket);
  return { fd, socket };
}

/** A real pipe (a FIFO): `readEnd` non-blocking for the native side or a Node socket, `writeEnd` blocking. */
function pipe(): { readEnd: number; writeEnd: number } {
  const dir = fs.mkdtempSync('/tmp/ferry-page-delta-');
  dirs.push(dir);
  execFileSync('mkfifo', [`${dir}/fifo`]);
  const readEnd = fs.openSync(`${dir}/fifo`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writeEnd = fs.openSync(`${dir}/fifo`, fs.constants.O_WRONLY);
  return { readEnd, writeEnd };
}

/** Everything the socket reads until end of stream. */
function collect(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

/** XXH3-128 of each page, in the stored form, by a second path: the system's libxxhash through Python's ctypes. */
function referenceHashes(bytes: Buffer): Buffer {
  const script = `
import ctypes, sys
class H(ctypes.Structure):
    _fields_ = [('low64', ctypes.c_uint64), ('high64', ctypes.c_uint64)]
lib = ctypes.CDLL('libxxhash.so.0')
lib.XXH3_128bits.restype = H
lib.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
data = sys.stdin.buffer.read()
out = bytearray()
for i in range(0, len(data), 4096):
    h = lib.XXH3_128bits(data[i:i + 4096], 4096)
    out += h.low64.to_bytes(8, 'little') + h.high64.to_bytes(8, 'little')
sys.stdout.buffer.write(bytes(out))
`;
  return execFileSync('python3', ['-c', script], { input: bytes, maxBuffer: 64 * 1024 * 1024 });
}

function randomPages(n: number): Buffer[] {
  return Array.from({ length: n }, () => randomBytes(PAGE));
}

/** A page index over pre-copy files given as their page contents. */
function indexOf(...files: Buffer[][]): PageIndex {
  return sys.buildPageIndex(files.map((pages) => referenceHashes(Buffer.concat(pages))));
}

interface DeltaRecord {
  op: number;
  a: number;
  b: number;
  c: number;
  bytes?: Buffer;
}

/** The records of a delta (a decoder written from the format in page-delta.ts), and whether it ended with END. */
function parseDelta(delta: Buffer): { records: DeltaRecord[]; ended: boolean } {
  expect(delta.subarray(0, PAGE_DELTA_MAGIC.length).equals(PAGE_DELTA_MAGIC)).toBe(true);
  const records: DeltaRecord[] = [];
  let offset = PAGE_DELTA_MAGIC.length;
  while (offset + PAGE_DELTA_HEAD_BYTES <= delta.length) {
    const [op, a, b, c] = [0, 4, 8, 12].map((at) => delta.readUInt32LE(offset + at));
    offset += PAGE_DELTA_HEAD_BYTES;
    const length = op === PAGE_DELTA_OP.LITERAL ? a * PAGE : op === PAGE_DELTA_OP.TAIL ? a : 0;
    const record: DeltaRecord = { op, a, b, c };
    if (length > 0) record.bytes = delta.subarray(offset, offset + length);
    offset += length;
    records.push(record);
    if (op === PAGE_DELTA_OP.END) {
      expect(offset).toBe(delta.length);
      return { records, ended: true };
    }
  }
  return { records, ended: false };
}

/** The records in short: 'REF file first n', 'LITERAL n', 'TAIL bytes', 'END bytes'. */
function summary(delta: Buffer): string[] {
  const { records, ended } = parseDelta(delta);
  expect(ended).toBe(true);
  return records.map(({ op, a, b, c }) => {
    if (op === PAGE_DELTA_OP.REF) return `REF ${a} ${b} ${c}`;
    if (op === PAGE_DELTA_OP.LITERAL) return `LITERAL ${a}`;
    if (op === PAGE_DELTA_OP.TAIL) return `TAIL ${a}`;
    if (op === PAGE_DELTA_OP.END) return `END ${b * 2 ** 32 + a}`;
    return `? ${op}`;
  });
}

/** Rebuilds the pages image from a delta and the pre-copy files' contents. */
function decode(delta: Buffer, files: Buffer[][]): Buffer {
  const out: Buffer[] = [];
  for (const { op, a, b, c, bytes } of parseDelta(delta).records) {
    if (op === PAGE_DELTA_OP.LITERAL || op === PAGE_DELTA_OP.TAIL) out.push(bytes as Buffer);
    if (op === PAGE_DELTA_OP.REF) out.push(...files[a].slice(b, b + c));
  }
  return Buffer.concat(out);
}

/** Runs dedupPages over `image`, written in `chunkBytes` pieces through a socketpair. */
async function dedup(index: PageIndex, image: Buffer, chunkBytes = 256 * 1024) {
  const input = endpoint();
  const output = endpoint();
  const deltaBytes = collect(output.socket);
  const running = sys.dedupPages(index, input.fd, output.fd);
  for (let at = 0; at < image.length; at += chunkBytes) input.socket.write(image.subarray(at, at + chunkBytes));
  input.socket.end();
  const counts = await running;
  sys.shutdown(output.fd, SHUT_WR);
  return { counts, delta: await deltaBytes };
}

/** A run as precopyRead takes it. */
function runs(...pairs: [number, number][]): Buffer {
  const buffer = Buffer.alloc(pairs.length * 16);
  pairs.forEach(([address, length], i) => {
    buffer.writeBigUInt64LE(BigInt(address), i * 16);
    buffer.writeBigUInt64LE(BigInt(length), i * 16 + 8);
  });
  return buffer;
}

/** The content of page i of the child's region: some zero pages, pages 20..29 repeat page 3. */
function childPage(i: number): Buffer {
  if (i % 8 === 7) return Buffer.alloc(PAGE);
  const k = i >= 20 && i < 30 ? 3 : i;
  return Buffer.from(Array.from({ length: PAGE }, (_, j) => (k * 131 + j * 7) & 0xff));
}

const CHILD = `
import ctypes, json, mmap, sys
PAGES = 64
def content(i):
    if i % 8 == 7: return None
    k = 3 if 20 <= i < 30 else i
    return bytes(((k * 131 + j * 7) & 0xff) for j in range(4096))
m = mmap.mmap(-1, PAGES * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(PAGES):
    c = content(i)
    if c is not None: m[i * 4096:(i + 1) * 4096] = c
address = ctypes.addressof(ctypes.c_char.from_buffer(m))
g = mmap.mmap(-1, 3 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
g[:] = b'\\xab' * (3 * 4096)
guard = ctypes.addressof(ctypes.c_char.from_buffer(g))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
if libc.mprotect(guard + 4096, 4096, 0) != 0: raise OSError(ctypes.get_errno(), 'mprotect')
print(json.dumps({'address': address, 'pages': PAGES, 'guard': guard}), flush=True)
sys.stdin.read()
`;

/** A python3 child holding 64 known pages at `address`, and 3 pages of 0xab at `guard` whose middle one is PROT_NONE. */
async function child(): Promise<{ pid: number; address: number; pages: number; guard: number }> {
  const proc = spawn('python3', ['-c', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(proc);
  const [line] = (await once(proc.stdout, 'data')) as [Buffer];
  return { pid: proc.pid as number, ...(JSON.parse(line.toString()) as { address: number; pages: number; guard: number }) };
}

/** precopyRead into a real pipe; returns its result and every byte the pipe carried. */
async function precopyToPipe(pid: number, runBytes: Buffer) {
  const { readEnd, writeEnd } = pipe();
  fds.push(writeEnd);
  const reader = new net.Socket({ fd: readEnd, readable: true, writable: false });
  sockets.push(reader);
  const received = collect(reader);
  const result = await sys.precopyRead(pid, runBytes, writeEnd);
  sys.close(fds.pop() as number);
  return { result, received: await received };
}

describe('precopyRead', () => {
  it("copies a live process's memory to a pipe in run order, with the XXH3-128 hash of every page", async () => {
    const { pid, address, pages } = await child();
    const { result, received } = await precopyToPipe(pid, runs([address + 8 * PAGE, 4 * PAGE], [address, pages * PAGE]));
    const expected = Buffer.concat([8, 9, 10, 11, ...Array.from({ length: pages }, (_, i) => i)].map(childPage));
    expect(received.equals(expected)).toBe(true);
    expect(result.bytes).toBe(expected.length);
    expect(result.unreadableBytes).toBe(0);
    expect((result.hashes.length / PAGE_HASH_BYTES) * PAGE).toBe(result.bytes);
    expect(result.hashes.equals(referenceHashes(received))).toBe(true);
    // Repeated content (zero pages, pages 20..29 = page 3) hashes alike; distinct content does not.
    const hashOf = (i: number): string => result.hashes.subarray(i * 16, i * 16 + 16).toString('hex');
    expect(hashOf(4 + 20)).toBe(hashOf(4 + 3));
    expect(hashOf(4 + 7)).toBe(hashOf(4 + 15));
    expect(hashOf(4 + 1)).not.toBe(hashOf(4 + 2));

    // The same bytes through dedupPages against their own hashes: one identity run.
    const { delta, counts } = await dedup(sys.buildPageIndex([result.hashes]), received, 10_000);
    expect(summary(delta)).toEqual([`REF 0 0 ${pages + 4}`, `END ${received.length}`]);
    expect(counts).toEqual({ bytesIn: received.length, bytesOut: 8 + 2 * PAGE_DELTA_HEAD_BYTES, literalPages: 0, refPages: pages + 4 });
  });

  it('writes and hashes what it cannot read as zeros, and counts it', async () => {
    const { pid, guard } = await child();
    // The guard's middle page is PROT_NONE; page 1 of the address space is never mapped.
    const { result, received } = await precopyToPipe(pid, runs([guard, 3 * PAGE], [PAGE, 2 * PAGE]));
    const ab = Buffer.alloc(PAGE, 0xab);
    expect(received.equals(Buffer.concat([ab, Buffer.alloc(PAGE), ab, Buffer.alloc(2 * PAGE)]))).toBe(true);
    expect(result).toMatchObject({ bytes: 5 * PAGE, unreadableBytes: 3 * PAGE });
    expect(result.hashes.equals(referenceHashes(received))).toBe(true);
  });

  it('rejects ESRCH for a process that is gone, and ECANCELED when stopped', async () => {
    const gone = spawn('true');
    await once(gone, 'exit');
    const devNull = fs.openSync('/dev/null', 'w');
    fds.push(devNull);
    await expect(sys.precopyRead(gone.pid as number, runs([0x10000, PAGE]), devNull)).rejects.toMatchObject({
      code: 'ESRCH',
      syscall: 'process_vm_readv',
    });

    const { pid, address, pages } = await child();
    const stopped = new AbortController();
    stopped.abort();
    await expect(sys.precopyRead(pid, runs([address, PAGE]), devNull, { signal: stopped.signal })).rejects.toMatchObject({ code: 'ECANCELED' });

    // 256 MiB into a socket nobody reads: it waits for room until the abort.
    const output = endpoint();
    output.socket.pause();
    const controller = new AbortController();
    const many = runs(...Array.from({ length: 1024 }, (): [number, number] => [address, pages * PAGE]));
    const reading = sys.precopyRead(pid, many, output.fd, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(reading).rejects.toMatchObject({ code: 'ECANCELED', syscall: 'precopyRead', errno: 125 });
  });

  it('refuses bad arguments before reading anything', async () => {
    const bad: [string, () => Promise<unknown>][] = [
      ['pid', () => sys.precopyRead(0, runs([0, PAGE]), 1)],
      ['runs', () => sys.precopyRead(1, 'runs' as unknown as Buffer, 1)],
      ['runs', () => sys.precopyRead(1, Buffer.alloc(15), 1)],
      ['runs', () => sys.precopyRead(1, runs([100, PAGE]), 1)],
      ['runs', () => sys.precopyRead(1, runs([PAGE, 0]), 1)],
      ['runs', () => sys.precopyRead(1, runs([PAGE, 100]), 1)],
      ['runs', () => sys.precopyRead(1, runs([2 ** 64 - PAGE, 2 * PAGE]), 1)],
      ['runs', () => sys.precopyRead(1, runs([0, PAGE], [PAGE, 2 * PAGE]), 1, { maxBytes: 2 * PAGE })],
      ['runs', () => sys.precopyRead(1, Buffer.alloc(16 * (2 ** 20 + 1)), 1)],
      ['outFd', () => sys.precopyRead(1, runs([0, PAGE]), -1)],
      ['options.maxBytes', () => sys.precopyRead(1, runs([0, PAGE]), 1, { maxBytes: 2 ** 40 })],
    ];
    for (const [argument, call] of bad) {
      const error = await call().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(SyscallArgumentError);
      expect(error).toMatchObject({ syscall: 'precopyRead', argument });
    }
  });
});

describe('buildPageIndex', () => {
  it('counts files and pages, and refuses what is not a list of hash arrays', () => {
    expect(sys.buildPageIndex([Buffer.alloc(32), Buffer.alloc(0), randomBytes(160)])).toEqual({ files: 3, pages: 12 });
    expect(buildPageIndex([])).toEqual({ files: 0, pages: 0 });
    expect(() => buildPageIndex([Buffer.alloc(8)])).toThrow(SyscallArgumentError);
    expect(() => sys.buildPageIndex('x' as unknown as Buffer[])).toThrow(SyscallArgumentError);
    expect(() => sys.buildPageIndex([Buffer.alloc(17)])).toThrow(/hashes\[0\]/);
    expect(() => sys.buildPageIndex([Buffer.alloc(16), 'x' as unknown as Buffer])).toThrow(/hashes\[1\]/);
    expect(() => sys.buildPageIndex(Array.from({ length: 65536 }, () => Buffer.alloc(0)))).toThrow(/at most 65535 files/);
  });
});

describe('dedupPages', () => {
  const pre = randomPages(40);
  let index: PageIndex;
  beforeAll(() => {
    index = indexOf(pre);
  });

  it('turns pages known in order into one REF, and a changed page into REF, LITERAL, REF', async () => {
    const same = await dedup(index, Buffer.concat(pre), 5000);
    expect(same.delta.subarray(0, 8).toString('latin1')).toBe('FRYDELT1');
    expect(summary(same.delta)).toEqual(['REF 0 0 40', `END ${40 * PAGE}`]);
    expect(same.counts).toMatchObject({ bytesIn: 40 * PAGE, literalPages: 0, refPages: 40 });

    const changed = [...pre];
    changed[17] = randomBytes(PAGE);
    const { delta, counts } = await dedup(index, Buffer.concat(changed));
    expect(summary(delta)).toEqual(['REF 0 0 17', 'LITERAL 1', 'REF 0 18 22', `END ${40 * PAGE}`]);
    expect(decode(delta, [pre]).equals(Buffer.concat(changed))).toBe(true);
    expect(counts).toEqual({ bytesIn: 40 * PAGE, bytesOut: delta.length, literalPages: 1, refPages: 39 });
  });

  it('refers to the right pages whatever their order', async () => {
    const order = [5, 6, 7, 0, 1, 2, 39, 12, 12, 13];
    const image = Buffer.concat(order.map((i) => pre[i]));
    const { delta } = await dedup(index, image);
    expect(summary(delta)).toEqual(['REF 0 5 3', 'REF 0 0 3', 'REF 0 39 1', 'REF 0 12 1', 'REF 0 12 2', `END ${image.length}`]);
    expect(decode(delta, [pre]).equals(image)).toBe(true);
  });

  it('keeps identity runs through content the pre-copy holds many times', async () => {
    const zero = Buffer.alloc(PAGE);
    const some = randomPages(3);
    // Mostly zero pages, with a few distinct ones among them.
    const mostlyZero = Array.from({ length: 300 }, (_, i) => (i === 100 ? some[0] : i === 200 ? some[1] : zero));
    const dupIndex = indexOf(mostlyZero);
    expect(summary((await dedup(dupIndex, Buffer.concat(mostlyZero))).delta)).toEqual(['REF 0 0 300', `END ${300 * PAGE}`]);

    // A zero page written since the pre-copy: the run resumes at the next page, not one page off.
    const written = [...mostlyZero];
    written[50] = some[2];
    const { delta } = await dedup(dupIndex, Buffer.concat(written));
    expect(summary(delta)).toEqual(['REF 0 0 50', 'LITERAL 1', 'REF 0 51 249', `END ${300 * PAGE}`]);

    // Two pre-copy files (a full round, then one holding the dirty pages again): references stay
    // in the file the run is in, and the first one goes to the smallest page at or after the
    // input position, in any file.
    const [x, y, z] = randomPages(3);
    const twoFiles = indexOf([x, y, zero, zero], [z, x, zero, y]);
    const first = await dedup(twoFiles, Buffer.concat([randomBytes(PAGE), x, zero, y]));
    expect(summary(first.delta)).toEqual(['LITERAL 1', 'REF 1 1 3', `END ${4 * PAGE}`]);
    const second = await dedup(twoFiles, Buffer.concat([x, y, zero, zero, z]));
    expect(summary(second.delta)).toEqual(['REF 0 0 4', 'REF 1 0 1', `END ${5 * PAGE}`]);
  });

  it('sends unknown pages as LITERAL records of at most 256 pages, in any read sizes', async () => {
    const image = Buffer.concat(randomPages(600));
    for (const chunk of [1000, 4096, 1 << 20]) {
      // The index built without a LinuxSyscalls works with one's dedupPages.
      const { delta, counts } = await dedup(buildPageIndex([]), image, chunk);
      expect(summary(delta)).toEqual(['LITERAL 256', 'LITERAL 256', 'LITERAL 88', `END ${image.length}`]);
      expect(decode(delta, []).equals(image)).toBe(true);
      expect(counts).toEqual({ bytesIn: image.length, bytesOut: 8 + 4 * PAGE_DELTA_HEAD_BYTES + image.length, literalPages: 600, refPages: 0 });
    }
  });

  it('ends a pages image that stops inside a page with TAIL, and END carries the total', async () => {
    const tail = randomBytes(100);
    const image = Buffer.concat([pre[0], pre[1], pre[2], tail]);
    const { delta } = await dedup(index, image, 777);
    expect(summary(delta)).toEqual(['REF 0 0 3', 'TAIL 100', `END ${3 * PAGE + 100}`]);
    expect(parseDelta(delta).records[1].bytes?.equals(tail)).toBe(true);
    expect(decode(delta, [pre]).equals(image)).toBe(true);
    expect(summary((await dedup(index, tail)).delta)).toEqual(['TAIL 100', 'END 100']);
    expect(summary((await dedup(index, Buffer.alloc(0))).delta)).toEqual(['END 0']);
  });

  it('works between real pipes', async () => {
    const image = Buffer.concat([...pre, ...randomPages(300), ...pre.slice(10), randomBytes(5)]);
    const input = pipe();
    const output = pipe();
    fds.push(input.readEnd, output.writeEnd);
    const reader = new net.Socket({ fd: output.readEnd, readable: true, writable: false });
    sockets.push(reader);
    const deltaBytes = collect(reader);
    const running = sys.dedupPages(index, input.readEnd, output.writeEnd);
    // A blocking pipe written from the thread pool (the event loop must stay free to drain the output).
    for (let at = 0; at < image.length; ) {
      at += await new Promise<number>((resolve, reject) =>
        fs.write(input.writeEnd, image, at, image.length - at, null, (err, written) => (err ? reject(err) : resolve(written))),
      );
    }
    fs.closeSync(input.writeEnd);
    const counts = await running;
    sys.close(fds.pop() as number);
    const delta = await deltaBytes;
    expect(summary(delta)).toEqual(['REF 0 0 40', 'LITERAL 256', 'LITERAL 44', 'REF 0 10 30', 'TAIL 5', `END ${image.length}`]);
    expect(decode(delta, [pre]).equals(image)).toBe(true);
    expect(counts).toMatchObject({ literalPages: 300, refPages: 70 });
  });

  it('stops on its AbortSignal (ECANCELED) without END, so the delta reads as cut', async () => {
    const input = endpoint();
    const output = endpoint();
    const deltaBytes = collect(output.socket);
    const controller = new AbortController();
    const running = sys.dedupPages(index, input.fd, output.fd, { signal: controller.signal });
    input.socket.write(Buffer.concat([pre[0], pre[1], randomBytes(PAGE)]));
    await once(output.socket, 'data');
    controller.abort();
    await expect(running).rejects.toMatchObject({ code: 'ECANCELED', syscall: 'dedupPages', errno: 125 });
    sys.shutdown(output.fd, SHUT_WR);
    const delta = await deltaBytes;
    expect(parseDelta(delta).ended).toBe(false);

    const stopped = new AbortController();
    stopped.abort();
    await expect(sys.dedupPages(index, input.fd, output.fd, { signal: stopped.signal })).rejects.toMatchObject({ code: 'ECANCELED' });
  });

  it('refuses bad arguments before starting', async () => {
    const bad: [string, () => Promise<unknown>][] = [
      ['index', () => sys.dedupPages({ files: 1, pages: 40 }, 0, 1)],
      ['index', () => sys.dedupPages(null as unknown as PageIndex, 0, 1)],
      ['inFd', () => sys.dedupPages(index, -1, 1)],
      ['outFd', () => sys.dedupPages(index, 0, 2.5)],
    ];
    for (const [argument, call] of bad) {
      const error = await call().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(SyscallArgumentError);
      expect(error).toMatchObject({ syscall: 'dedupPages', argument });
    }
    await expect(sys.dedupPages(index, 987_654, 1)).rejects.toMatchObject({ code: 'EBADF', syscall: 'fstat' });
  });
});
