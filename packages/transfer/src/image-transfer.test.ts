/**
 * Image transfer end to end against a real nats-server: a complete image over NATS or the direct
 * TCP path, and how a transfer ends when a side goes silent or aborts. What the receiver refuses
 * (corruption, file names, malformed frames, limits) is in image-receiver-validation.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { decode, encode, ErrorCode, FerryError, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { ImageReceiver, sendImage } from './index';
import { connectDirect } from './direct-path';
import { freePort } from './test-nats-server';
import { chunkFrame, fileFrame, listTree, MIB, rejection, TransferTestBed } from './test-transfer-bed';

jest.setTimeout(60_000);

const bed = TransferTestBed.install();
const v = PROTOCOL_VERSION;

describe('a complete image', () => {
  it('arrives byte-identical with modes kept, through sub-directories and an empty file', async () => {
    const { id, src, dst } = await bed.freshTransfer();
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

    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src);
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
    const { id, src, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await expect(sendImage(bed.senderNc, id, src)).resolves.toMatchObject({ files: 0, bytes: 0, chunks: 0 });
    await expect(receiver.done).resolves.toMatchObject({ files: 0, bytes: 0 });
  });

  it('fits chunks under a small chunkBytes and window', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const content = randomBytes(100_001);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src, { chunkBytes: 1000, windowChunks: 2 });
    await receiver.done;
    expect(sent.chunks).toBe(101);
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('refuses to send a directory holding a symlink', async () => {
    const { id, src } = await bed.freshTransfer();
    await symlink('/etc/passwd', join(src, 'link'));
    expect((await rejection(sendImage(bed.senderNc, id, src, { idleTimeoutMs: 500 }))).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('silence and aborts', () => {
  it('fails a sender without receiver with DEADLINE_EXCEEDED within the idle timeout, after sending one window', async () => {
    const { id, src } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(64 * 1024));
    const seen: number[] = [];
    const dataSub = bed.receiverNc.subscribe(subjects.xferData(id), {
      callback: (_e, msg) => seen.push((decode(msg.data) as { seq: number }).seq),
    });
    const ctl = bed.watchCtl(id);
    await bed.receiverNc.flush();
    const startedMs = Date.now();
    const err = await rejection(sendImage(bed.senderNc, id, src, { idleTimeoutMs: 500, chunkBytes: 1024, windowChunks: 4 }));
    const elapsedMs = Date.now() - startedMs;
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(elapsedMs).toBeGreaterThanOrEqual(450);
    expect(elapsedMs).toBeLessThan(1_500);
    await bed.receiverNc.flush();
    await bed.senderNc.flush();
    dataSub.unsubscribe();
    // Flow control: no more than windowChunks frames without an ack.
    expect(seen).toEqual([0, 1, 2, 3]);
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'abort', code: ErrorCode.DEADLINE_EXCEEDED }));
    ctl.stop();
  });

  it('fails a receiver whose sender goes silent within its idle timeout', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { idleTimeoutMs: 500 });
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(1, 'a.img', 0, Buffer.alloc(5))]);
    const lastFrameMs = Date.now();
    const err = await rejection(receiver.done);
    const silentMs = Date.now() - lastFrameMs;
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(silentMs).toBeGreaterThanOrEqual(400);
    expect(silentMs).toBeLessThan(1_500);
  });

  it('fails a receiver that never hears from a sender', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { idleTimeoutMs: 300 });
    await receiver.ready();
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.DEADLINE_EXCEEDED);
  });

  it('waits firstFrameTimeoutMs for the first frame (the dump comes first), then the idle timeout between frames', async () => {
    const { id, dst } = await bed.freshTransfer();
    const startedMs = Date.now();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { idleTimeoutMs: 300, firstFrameTimeoutMs: 1_200 });
    await receiver.ready();
    // Longer than the idle timeout, shorter than the first-frame allowance: still alive.
    await new Promise((r) => setTimeout(r, 700));
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10)]);
    const lastFrameMs = Date.now();
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(err.message).toMatch(/nothing received/);
    expect(Date.now() - lastFrameMs).toBeLessThan(1_000);
    expect(lastFrameMs - startedMs).toBeGreaterThanOrEqual(700);
  });

  it('fails a receiver whose first frame never comes within firstFrameTimeoutMs', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { idleTimeoutMs: 100, firstFrameTimeoutMs: 400 });
    await receiver.ready();
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(err.message).toMatch(/no frame .* arrived within/);
  });

  it('fails the receiver with TRANSFER_FAILED when the sender aborts', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10)]);
    bed.senderNc.publish(subjects.xferCtl(id), encode({ v, t: 'abort', code: ErrorCode.UNAVAILABLE, message: 'source went away' }));
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('source went away');
  });

  it('fails the sender with TRANSFER_FAILED when the receiver aborts mid-way', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(16 * MIB));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const sending = sendImage(bed.senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    const err = await rejection(sending);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('operator cancelled');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('refuses a receiver directory that does not exist', () => {
    expect(() => ImageReceiver.start(bed.receiverNc, 'xfer-nodir', join(bed.scratch, 'missing'))).toThrow(FerryError);
  });
});

describe('direct path', () => {
  const direct = { directListenAddress: '127.0.0.1' };

  it('moves the image over TCP, byte-identical, with nothing on the NATS data subject', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const content = randomBytes(20 * MIB + 3);
    await writeFile(join(src, 'pages-1.img'), content);
    await writeFile(join(src, 'core-1.img'), randomBytes(777));
    await chmod(join(src, 'core-1.img'), 0o400);
    const data = bed.watchData(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, direct);
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src, { chunkBytes: 256 * 1024 });
    const received = await receiver.done;
    await bed.senderNc.flush();
    data.stop();
    expect(sent).toMatchObject({ transport: 'direct', files: 2, bytes: content.length + 777 });
    expect(received).toMatchObject({ transport: 'direct', files: 2, bytes: content.length + 777, chunks: sent.chunks });
    expect(data.count()).toBe(0);
    expect((await readFile(join(dst, 'pages-1.img'))).equals(content)).toBe(true);
    expect((await stat(join(dst, 'core-1.img'))).mode & 0o777).toBe(0o400);
  });

  it('falls back to NATS when the receiver offers no endpoint', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const content = randomBytes(300_000);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await expect(sendImage(bed.senderNc, id, src)).resolves.toMatchObject({ transport: 'nats', bytes: content.length });
    await expect(receiver.done).resolves.toMatchObject({ transport: 'nats' });
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('fails with UNAVAILABLE when the direct path is required and not offered, and aborts the receiver', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(1000));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    expect((await rejection(sendImage(bed.senderNc, id, src, { transport: 'direct' }))).code).toBe(ErrorCode.UNAVAILABLE);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(await readdir(dst)).toEqual([]);
  });

  it('uses NATS when told to, even with an endpoint on offer', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(10_000));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, direct);
    await receiver.ready();
    await expect(sendImage(bed.senderNc, id, src, { transport: 'nats' })).resolves.toMatchObject({ transport: 'nats' });
    await expect(receiver.done).resolves.toMatchObject({ transport: 'nats' });
  });

  it('reports an offered endpoint that cannot be reached instead of throwing', async () => {
    const id = `xfer-unreachable-${process.pid}`;
    const closedPort = await freePort();
    const fake = bed.receiverNc.subscribe(subjects.xferDirect(id), {
      callback: (_e, msg) => msg.respond(encode({ v, t: 'offer', host: '127.0.0.1', port: closedPort, token: 'a'.repeat(32) })),
    });
    await bed.receiverNc.flush();
    const result = await connectDirect(bed.senderNc, id, 1024, { offerMs: 1_000, connectMs: 1_000 });
    fake.unsubscribe();
    expect(result).toEqual({ reason: expect.stringContaining('cannot connect') });
  });

  it('drops a connection with a wrong token and still serves the real sender', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const content = randomBytes(100_000);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, direct);
    await receiver.ready();
    const offer = decode((await bed.senderNc.request(subjects.xferDirect(id), encode({ v, t: 'direct' }))).data) as { host: string; port: number };
    const intruder = tcpConnect(offer.port, offer.host);
    await new Promise((r) => intruder.once('connect', r));
    const hello = encode({ v, t: 'hello', token: 'b'.repeat(32) });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(hello.byteLength);
    intruder.write(Buffer.concat([header, hello]));
    await new Promise((r) => intruder.once('close', r));
    await expect(sendImage(bed.senderNc, id, src)).resolves.toMatchObject({ transport: 'direct' });
    await receiver.done;
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('fails both sides with TRANSFER_FAILED when the receiver aborts a direct transfer mid-way', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(16 * MIB));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, direct);
    await receiver.ready();
    const sending = sendImage(bed.senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    expect((await rejection(sending)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails a receiver on a direct transfer that also gets data over NATS', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(4 * MIB));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, direct);
    await receiver.ready();
    const sending = sendImage(bed.senderNc, id, src, { chunkBytes: 64 * 1024, windowChunks: 1 });
    sending.catch(() => undefined);
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    await bed.publishRaw(id, [fileFrame(0, 'x.img', 1)]);
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toContain('over NATS during a direct transfer');
    expect((await rejection(sending)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });
});
