/**
 * Image transfer against a real nats-server (started per file on a free port, killed by PID).
 * Sender and receiver use separate connections, as two agents would.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { connect, type NatsConnection } from 'nats';
import { decode, encode, ErrorCode, FerryError, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { ImageReceiver, sendImage, type ImageReceiverOptions } from './index';
import { connectDirect } from './direct-path';
import { freePort, startTestNatsServer, type TestNatsServer } from './test-nats-server';

const MIB = 1024 * 1024;
jest.setTimeout(60_000);


let server: TestNatsServer;
let senderNc: NatsConnection;
let receiverNc: NatsConnection;
let scratch: string;
let transferCounter = 0;

beforeAll(async () => {
  server = await startTestNatsServer();
  senderNc = await connect({ servers: server.url });
  receiverNc = await connect({ servers: server.url });
  scratch = await mkdtemp(join(tmpdir(), 'ferry-transfer-test-'));
});

afterAll(async () => {
  await senderNc?.close();
  await receiverNc?.close();
  await server?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** A fresh transfer id and fresh source/target dirs (0700, as the agent makes them). */
async function freshTransfer(): Promise<{ id: string; src: string; dst: string; parent: string }> {
  transferCounter += 1;
  const parent = join(scratch, `t${transferCounter}`);
  const src = join(parent, 'src');
  const dst = join(parent, 'dst');
  await mkdir(src, { recursive: true, mode: 0o700 });
  await mkdir(dst, { recursive: true, mode: 0o700 });
  return { id: `xfer-${transferCounter}-${process.pid}`, src, dst, parent };
}

async function rejection(promise: Promise<unknown>): Promise<FerryError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    return err as FerryError;
  }
  throw new Error('expected a rejection');
}

/** Collects the frames published on a transfer's ctl subject. */
function watchCtl(id: string): { frames: Array<Record<string, unknown>>; stop: () => void } {
  const frames: Array<Record<string, unknown>> = [];
  const sub = senderNc.subscribe(subjects.xferCtl(id), {
    callback: (_err, msg) => frames.push(decode(msg.data) as Record<string, unknown>),
  });
  return { frames, stop: () => sub.unsubscribe() };
}

/** Publishes raw frames on the data subject, as a (possibly hostile) sender would. */
async function publishRaw(id: string, frames: unknown[]): Promise<void> {
  for (const f of frames) senderNc.publish(subjects.xferData(id), f instanceof Uint8Array ? f : encode(f));
  await senderNc.flush();
}

const v = PROTOCOL_VERSION;
const fileFrame = (seq: number, path: string, size: number) => ({ v, t: 'file', seq, path, mode: 0o600, size });
const chunkFrame = (seq: number, path: string, offset: number, data: Buffer, crc = crc32(data)) => ({ v, t: 'chunk', seq, path, offset, data, crc });

async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map(String).sort();
}

describe('a complete image', () => {
  it('arrives byte-identical with modes kept, through sub-directories and an empty file', async () => {
    const { id, src, dst } = await freshTransfer();
    const files: Array<{ path: string; content: Buffer; mode: number }> = [
      { path: 'pages-1.img', content: randomBytes(40 * MIB), mode: 0o600 },
      { path: 'empty.img', content: Buffer.alloc(0), mode: 0o644 },
      { path: 'inventory.img', content: randomBytes(12_345), mode: 0o400 },
      { path: 'one-past-chunk.img', content: randomBytes(512 * 1024 + 1), mode: 0o640 },
      { path: 'sub/deeper/core-1.img', content: randomBytes(1), mode: 0o755 },
      { path: 'sub/mm-1.img', content: randomBytes(3 * MIB - 7), mode: 0o600 },
    ];
    await mkdir(join(src, 'sub/deeper'), { recursive: true });
    for (const f of files) {
      await writeFile(join(src, f.path), f.content);
      await chmod(join(src, f.path), f.mode);
    }
    const totalBytes = files.reduce((n, f) => n + f.content.length, 0);

    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const sent = await sendImage(senderNc, id, src);
    const received = await receiver.done;

    // No direct endpoint offered: NATS.
    expect(sent).toMatchObject({ files: files.length, bytes: totalBytes, transport: 'nats' });
    expect(received).toMatchObject({ files: files.length, bytes: totalBytes, chunks: sent.chunks, transport: 'nats' });
    expect(receiver.progress()).toEqual({ files: files.length, bytes: totalBytes });
    for (const f of files) {
      const target = join(dst, f.path);
      expect((await readFile(target)).equals(f.content)).toBe(true);
      expect((await stat(target)).mode & 0o777).toBe(f.mode);
    }
    expect(await listTree(dst)).toEqual(await listTree(src));
  });

  it('sends an empty directory as an image of no files', async () => {
    const { id, src, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await expect(sendImage(senderNc, id, src)).resolves.toMatchObject({ files: 0, bytes: 0, chunks: 0 });
    await expect(receiver.done).resolves.toMatchObject({ files: 0, bytes: 0 });
  });

  it('fits chunks under a small chunkBytes and window', async () => {
    const { id, src, dst } = await freshTransfer();
    const content = randomBytes(100_001);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const sent = await sendImage(senderNc, id, src, { chunkBytes: 1000, windowChunks: 2 });
    await receiver.done;
    expect(sent.chunks).toBe(101);
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('refuses to send a directory holding a symlink', async () => {
    const { id, src } = await freshTransfer();
    await symlink('/etc/passwd', join(src, 'link'));
    expect((await rejection(sendImage(senderNc, id, src, { idleTimeoutMs: 500 }))).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('corruption', () => {
  it('fails a chunk whose crc does not match with TRANSFER_FAILED and tells the sender', async () => {
    const { id, dst } = await freshTransfer();
    const ctl = watchCtl(id);
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const data = randomBytes(1000);
    await publishRaw(id, [fileFrame(0, 'a.img', 1000), chunkFrame(1, 'a.img', 0, data, (crc32(data) + 1) >>> 0)]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await receiverNc.flush();
    await senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.TRANSFER_FAILED }));
    ctl.stop();
  });

  it('fails a file whose whole-file crc32 does not match with TRANSFER_FAILED', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const data = randomBytes(10);
    await publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(1, 'a.img', 0, data), { v, t: 'eof', seq: 2, path: 'a.img', crc: (crc32(data) + 1) >>> 0 }]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails a second chunk whose crc is its own instead of the running crc of the file', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const [first, second] = [randomBytes(10), randomBytes(10)];
    // Each chunk alone is intact; only the chain shows the second was not meant to follow the first.
    await publishRaw(id, [fileFrame(0, 'a.img', 20), chunkFrame(1, 'a.img', 0, first), chunkFrame(2, 'a.img', 10, second, crc32(second))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails on a lost frame (sequence gap) with TRANSFER_FAILED', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(2, 'a.img', 0, randomBytes(10))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it.each([
    ['out of order', [chunkFrame(1, 'a.img', 5, Buffer.alloc(5))]],
    ['overlapping', [chunkFrame(1, 'a.img', 0, Buffer.alloc(6)), chunkFrame(2, 'a.img', 3, Buffer.alloc(4))]],
    ['beyond the declared size', [chunkFrame(1, 'a.img', 0, Buffer.alloc(11))]],
    ['for another file', [chunkFrame(1, 'b.img', 0, Buffer.alloc(1))]],
    ['empty', [chunkFrame(1, 'a.img', 0, Buffer.alloc(0))]],
  ])('rejects a chunk %s with INVALID_ARGUMENT', async (_what, chunks) => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, 'a.img', 10), ...chunks]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('file names', () => {
  it.each(['../evil', '/ABSOLUTE', 'sub/../../evil', 'nul\0byte', 'a//b'])('rejects %j and writes nothing outside', async (name) => {
    const { id, dst, parent } = await freshTransfer();
    const absolute = join(parent, 'absolute-target');
    const path = name === '/ABSOLUTE' ? absolute : name;
    const ctl = watchCtl(id);
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, path, 4), chunkFrame(1, path, 0, Buffer.from('evil'))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await receiverNc.flush();
    await senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.INVALID_ARGUMENT }));
    ctl.stop();
    expect(await readdir(dst)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['dst', 'src']);
  });

  it('does not follow a symlink found in the directory', async () => {
    const { id, dst, parent } = await freshTransfer();
    const outside = join(parent, 'outside');
    await mkdir(outside);
    await symlink(outside, join(dst, 'link'));
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, 'link/x.img', 1)]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(join(dst, 'link'))).isSymbolicLink()).toBe(true);
  });

  it('refuses a file name sent twice', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const eof = (seq: number) => ({ v, t: 'eof', seq, path: 'a.img', crc: 0 });
    await publishRaw(id, [fileFrame(0, 'a.img', 0), eof(1), fileFrame(2, 'a.img', 0)]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('malformed frames', () => {
  it.each([
    ['malformed msgpack', Buffer.from([0xc1])],
    ['truncated msgpack', encode({ v, t: 'file', seq: 0, path: 'a.img', mode: 0o600, size: 1 }).subarray(0, 10)],
    ['a non-map', encode([1, 2, 3])],
    ['an unknown type', { v, t: 'bogus', seq: 0 }],
    ['missing fields', { v, t: 'chunk', seq: 0 }],
    ['an unknown field', { ...fileFrame(0, 'a.img', 1), extra: true }],
    ['a string where a number belongs', { ...fileFrame(0, 'a.img', 1), size: '1' }],
    ['a negative size', fileFrame(0, 'a.img', -1)],
    ['set-uid mode bits', { ...fileFrame(0, 'a.img', 1), mode: 0o4755 }],
    ['a crc out of range', { v, t: 'eof', seq: 0, path: 'a.img', crc: 2 ** 32 }],
  ])('answers %s with INVALID_ARGUMENT on ctl, without crashing', async (_what, frame) => {
    const { id, dst } = await freshTransfer();
    const ctl = watchCtl(id);
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [frame]);
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await receiverNc.flush();
    await senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.INVALID_ARGUMENT }));
    ctl.stop();
  });

  it('refuses another protocol version with FAILED_PRECONDITION', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [{ ...fileFrame(0, 'a.img', 1), v: PROTOCOL_VERSION + 1 }]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.FAILED_PRECONDITION);
  });

  it('fails on a malformed ctl frame', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    senderNc.publish(subjects.xferCtl(id), Buffer.from('not msgpack at all \xc1'));
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('limits', () => {
  async function threeFiles(src: string): Promise<void> {
    for (const name of ['a.img', 'b.img', 'c.img']) await writeFile(join(src, name), randomBytes(100 * 1024));
  }

  it.each<[string, Partial<ImageReceiverOptions>]>([
    ['maxTotalBytes', { maxTotalBytes: 250 * 1024 }],
    ['maxFileBytes', { maxFileBytes: 100 * 1024 - 1 }],
    ['maxFiles', { maxFiles: 2 }],
  ])('fails both sides with INVALID_ARGUMENT when %s is exceeded', async (_what, limits) => {
    const { id, src, dst } = await freshTransfer();
    await threeFiles(src);
    const receiver = ImageReceiver.start(receiverNc, id, dst, limits);
    await receiver.ready();
    const senderErr = await rejection(sendImage(senderNc, id, src, { idleTimeoutMs: 5_000 }));
    expect(senderErr.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(senderErr.message).toContain('receiver failed');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    const written = await Promise.all((await readdir(dst)).map(async (n) => (await stat(join(dst, n))).size));
    expect(written.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(250 * 1024);
  });
});

describe('silence and aborts', () => {
  it('fails a sender without receiver with DEADLINE_EXCEEDED within the idle timeout, after sending one window', async () => {
    const { id, src } = await freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(64 * 1024));
    const seen: number[] = [];
    const dataSub = receiverNc.subscribe(subjects.xferData(id), {
      callback: (_e, msg) => seen.push((decode(msg.data) as { seq: number }).seq),
    });
    const ctl = watchCtl(id);
    await receiverNc.flush();
    const startedMs = Date.now();
    const err = await rejection(sendImage(senderNc, id, src, { idleTimeoutMs: 500, chunkBytes: 1024, windowChunks: 4 }));
    const elapsedMs = Date.now() - startedMs;
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(elapsedMs).toBeGreaterThanOrEqual(450);
    expect(elapsedMs).toBeLessThan(1_500);
    await receiverNc.flush();
    await senderNc.flush();
    dataSub.unsubscribe();
    // Flow control: no more than windowChunks frames without an ack.
    expect(seen).toEqual([0, 1, 2, 3]);
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'abort', code: ErrorCode.DEADLINE_EXCEEDED }));
    ctl.stop();
  });

  it('fails a receiver whose sender goes silent within its idle timeout', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst, { idleTimeoutMs: 500 });
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(1, 'a.img', 0, Buffer.alloc(5))]);
    const lastFrameMs = Date.now();
    const err = await rejection(receiver.done);
    const silentMs = Date.now() - lastFrameMs;
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(silentMs).toBeGreaterThanOrEqual(400);
    expect(silentMs).toBeLessThan(1_500);
  });

  it('fails a receiver that never hears from a sender', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst, { idleTimeoutMs: 300 });
    await receiver.ready();
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
  });

  it('waits firstFrameTimeoutMs for the first frame (the dump comes first), then the idle timeout between frames', async () => {
    const { id, dst } = await freshTransfer();
    const startedMs = Date.now();
    const receiver = ImageReceiver.start(receiverNc, id, dst, { idleTimeoutMs: 300, firstFrameTimeoutMs: 1_200 });
    await receiver.ready();
    // Longer than the idle timeout, shorter than the first-frame allowance: still alive.
    await new Promise((r) => setTimeout(r, 700));
    await publishRaw(id, [fileFrame(0, 'a.img', 10)]);
    const lastFrameMs = Date.now();
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(err.message).toMatch(/nothing received/);
    expect(Date.now() - lastFrameMs).toBeLessThan(1_000);
    expect(lastFrameMs - startedMs).toBeGreaterThanOrEqual(700);
  });

  it('fails a receiver whose first frame never comes within firstFrameTimeoutMs', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst, { idleTimeoutMs: 100, firstFrameTimeoutMs: 400 });
    await receiver.ready();
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(err.message).toMatch(/no frame .* arrived within/);
  });

  it('fails the receiver with TRANSFER_FAILED when the sender aborts', async () => {
    const { id, dst } = await freshTransfer();
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await publishRaw(id, [fileFrame(0, 'a.img', 10)]);
    senderNc.publish(subjects.xferCtl(id), encode({ v, t: 'abort', code: ErrorCode.UNAVAILABLE, message: 'source went away' }));
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('source went away');
  });

  it('fails the sender with TRANSFER_FAILED when the receiver aborts mid-way', async () => {
    const { id, src, dst } = await freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(16 * MIB));
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    const sending = sendImage(senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    const err = await rejection(sending);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('operator cancelled');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('refuses a receiver directory that does not exist', () => {
    expect(() => ImageReceiver.start(receiverNc, 'xfer-nodir', join(scratch, 'missing'))).toThrow(FerryError);
  });
});

describe('direct path', () => {
  const direct = { directListenAddress: '127.0.0.1' };

  /** Counts frames that go through nats-server on the transfer's data subject. */
  function watchData(id: string): { count: () => number; stop: () => void } {
    let n = 0;
    const sub = senderNc.subscribe(subjects.xferData(id), { callback: () => void (n += 1) });
    return { count: () => n, stop: () => sub.unsubscribe() };
  }

  it('moves the image over TCP, byte-identical, with nothing on the NATS data subject', async () => {
    const { id, src, dst } = await freshTransfer();
    const content = randomBytes(20 * MIB + 3);
    await writeFile(join(src, 'pages-1.img'), content);
    await writeFile(join(src, 'core-1.img'), randomBytes(777));
    await chmod(join(src, 'core-1.img'), 0o400);
    const data = watchData(id);
    const receiver = ImageReceiver.start(receiverNc, id, dst, direct);
    await receiver.ready();
    const sent = await sendImage(senderNc, id, src, { chunkBytes: 256 * 1024 });
    const received = await receiver.done;
    await senderNc.flush();
    data.stop();
    expect(sent).toMatchObject({ transport: 'direct', files: 2, bytes: content.length + 777 });
    expect(received).toMatchObject({ transport: 'direct', files: 2, bytes: content.length + 777, chunks: sent.chunks });
    expect(data.count()).toBe(0);
    expect((await readFile(join(dst, 'pages-1.img'))).equals(content)).toBe(true);
    expect((await stat(join(dst, 'core-1.img'))).mode & 0o777).toBe(0o400);
  });

  it('falls back to NATS when the receiver offers no endpoint', async () => {
    const { id, src, dst } = await freshTransfer();
    const content = randomBytes(300_000);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    await expect(sendImage(senderNc, id, src)).resolves.toMatchObject({ transport: 'nats', bytes: content.length });
    await expect(receiver.done).resolves.toMatchObject({ transport: 'nats' });
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('fails with UNAVAILABLE when the direct path is required and not offered, and aborts the receiver', async () => {
    const { id, src, dst } = await freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(1000));
    const receiver = ImageReceiver.start(receiverNc, id, dst);
    await receiver.ready();
    expect((await rejection(sendImage(senderNc, id, src, { transport: 'direct' }))).code).toBe(ErrorCode.UNAVAILABLE);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(await readdir(dst)).toEqual([]);
  });

  it('uses NATS when told to, even with an endpoint on offer', async () => {
    const { id, src, dst } = await freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(10_000));
    const receiver = ImageReceiver.start(receiverNc, id, dst, direct);
    await receiver.ready();
    await expect(sendImage(senderNc, id, src, { transport: 'nats' })).resolves.toMatchObject({ transport: 'nats' });
    await expect(receiver.done).resolves.toMatchObject({ transport: 'nats' });
  });

  it('reports an offered endpoint that cannot be reached instead of throwing', async () => {
    const id = `xfer-unreachable-${process.pid}`;
    const closedPort = await freePort();
    const fake = receiverNc.subscribe(subjects.xferDirect(id), {
      callback: (_e, msg) => msg.respond(encode({ v, t: 'offer', host: '127.0.0.1', port: closedPort, token: 'a'.repeat(32) })),
    });
    await receiverNc.flush();
    const result = await connectDirect(senderNc, id, 1024, { offerMs: 1_000, connectMs: 1_000 });
    fake.unsubscribe();
    expect(result).toEqual({ reason: expect.stringContaining('cannot connect') });
  });

  it('drops a connection with a wrong token and still serves the real sender', async () => {
    const { id, src, dst } = await freshTransfer();
    const content = randomBytes(100_000);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(receiverNc, id, dst, direct);
    await receiver.ready();
    const offer = decode((await senderNc.request(subjects.xferDirect(id), encode({ v, t: 'direct' }))).data) as { host: string; port: number };
    const intruder = tcpConnect(offer.port, offer.host);
    await new Promise((r) => intruder.once('connect', r));
    const hello = encode({ v, t: 'hello', token: 'b'.repeat(32) });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(hello.byteLength);
    intruder.write(Buffer.concat([header, hello]));
    await new Promise((r) => intruder.once('close', r));
    await expect(sendImage(senderNc, id, src)).resolves.toMatchObject({ transport: 'direct' });
    await receiver.done;
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('fails both sides with TRANSFER_FAILED when the receiver aborts a direct transfer mid-way', async () => {
    const { id, src, dst } = await freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(16 * MIB));
    const receiver = ImageReceiver.start(receiverNc, id, dst, direct);
    await receiver.ready();
    const sending = sendImage(senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    expect((await rejection(sending)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails a receiver on a direct transfer that also gets data over NATS', async () => {
    const { id, src, dst } = await freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(4 * MIB));
    const receiver = ImageReceiver.start(receiverNc, id, dst, direct);
    await receiver.ready();
    const sending = sendImage(senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    sending.catch(() => undefined);
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    await publishRaw(id, [fileFrame(0, 'x.img', 1)]);
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('over NATS during a direct transfer');
    expect((await rejection(sending)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });
});
