/**
 * Live image files (image-frames.ts LiveImageFile): bodies read from a descriptor while their
 * writer (CRIU's image streamer, in the agent) is still writing them, streamed through the real
 * native pump; streamed in chunk frames where the transfer is not pumped; and what the receiver
 * does with a sender that lies about a streamed body.
 */
import { randomBytes } from 'node:crypto';
import { write } from 'node:fs';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SHUT_WR } from '@ferry/native';
import { crc32 } from 'node:zlib';
import { encode, ErrorCode, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import type { FilePump } from './file-pump';
import { ImageReceiver, sendImage, type LiveImageFile } from './index';
import { chunkFrame, fileFrame, MIB, rejection, TransferTestBed } from './test-transfer-bed';
import { nativePump, sys } from './test-native-pump';

jest.setTimeout(60_000);

const bed = TransferTestBed.install();
const KEY = randomBytes(32);
const writeFd = promisify(write);


const receiving = { directListenAddress: '127.0.0.1', imageKey: KEY, filePump: nativePump };
const sending = { imageKey: KEY, filePump: nativePump };

/**
 * A file being written as CRIU's streamer would hand it over: the read end of a socket pair, the
 * writer putting `content` in 1 MiB pieces with pauses, then ending it. `written` settles when
 * the writer is done (or failed: the reader went away).
 */
function liveFile(path: string, content: Buffer, pauseEveryMiB = 4): { file: LiveImageFile; written: Promise<void>; close: () => void } {
  const [readEnd, writeEnd] = sys.socketpair();
  const written = (async () => {
    try {
      for (let at = 0; at < content.length; at += MIB) {
        await writeFd(writeEnd, content, at, Math.min(MIB, content.length - at));
        if (at % (pauseEveryMiB * MIB) === 0) await new Promise((r) => setTimeout(r, 5));
      }
      sys.shutdown(writeEnd, SHUT_WR);
    } finally {
      sys.close(writeEnd);
    }
  })();
  return { file: { path, mode: 0o600, fd: readEnd }, written, close: () => sys.close(readEnd) };
}

/** Yields the live files, then (the "dump" over) writes the late files into `dir` and ends. */
async function* liveThen(files: ReturnType<typeof liveFile>[], dir: string, late: Record<string, Buffer>): AsyncGenerator<LiveImageFile> {
  try {
    for (const f of files) yield f.file;
    for (const [name, content] of Object.entries(late)) await writeFile(join(dir, name), content);
  } finally {
    for (const f of files) f.close();
  }
}

describe('live image files', () => {
  it('streams each live body through the pump while it is written, then sends the files the directory holds', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const pages = randomBytes(20 * MIB + 123);
    const shmem = randomBytes(3 * MIB);
    const live = [liveFile('pages-1.img', pages), liveFile('pages-2.img', shmem)];
    const core = randomBytes(999);
    await writeFile(join(src, 'early.img'), Buffer.from('before'));
    const data = bed.watchData(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src, { ...sending, transport: 'direct', live: liveThen(live, src, { 'core-1.img': core }) });
    const received = await receiver.done;
    await Promise.all(live.map((f) => f.written));
    await bed.senderNc.flush();
    data.stop();
    const bytes = pages.length + shmem.length + core.length + 6;
    expect(sent).toMatchObject({ transport: 'direct', files: 4, bytes });
    expect(received).toMatchObject({ transport: 'direct', files: 4, bytes });
    expect(data.count()).toBe(4 * 2 + 1);
    expect((await readFile(join(dst, 'pages-1.img'))).equals(pages)).toBe(true);
    expect((await readFile(join(dst, 'pages-2.img'))).equals(shmem)).toBe(true);
    expect((await readFile(join(dst, 'core-1.img'))).equals(core)).toBe(true);
    expect(await readFile(join(dst, 'early.img'), 'utf8')).toBe('before');
    // The live bodies went to the wire, not to the source's directory.
    expect((await readdir(src)).sort()).toEqual(['core-1.img', 'early.img']);
  });

  it.each([
    ['direct', true],
    ['nats', true],
    ['nats', false],
  ] as const)('streams live files in chunks as they are written where the transfer is not pumped (%s, sealed %s): none lands on the sender\'s disk', async (transport, sealed) => {
    const { id, src, dst } = await bed.freshTransfer();
    // Not a multiple of the chunk size: a short last chunk.
    const pages = randomBytes(9 * MIB + 7);
    const live = [liveFile('pages-1.img', pages)];
    let done = 0;
    live[0]!.file.onDone = () => (done += 1);
    // No pump on the receiver: chunk frames (over the direct connection, or NATS).
    const keyed = sealed ? { imageKey: KEY } : {};
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { directListenAddress: '127.0.0.1', ...keyed });
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src, { ...keyed, transport, chunkBytes: 4 * MIB, live: liveThen(live, src, { 'core-1.img': Buffer.from('core') }) });
    await expect(receiver.done).resolves.toMatchObject({ files: 2 });
    expect(sent).toMatchObject({ transport, files: 2, bytes: pages.length + 4 });
    expect((await readFile(join(dst, 'pages-1.img'))).equals(pages)).toBe(true);
    expect((await readFile(join(dst, 'core-1.img'))).toString()).toBe('core');
    // Told once the receiver acknowledged its eof; never written on the sender.
    expect(done).toBe(1);
    expect(await readdir(src)).toEqual(['core-1.img']);
  });

  it('bounds a file streamed in chunks by the receiver\'s limits, and refuses an eof whose size or crc is not what came', async () => {
    // The test server's max_payload is 1 MiB.
    const K = 256 * 1024;
    const chunk = randomBytes(K);
    const eof = (fields: object) => ({ v: PROTOCOL_VERSION, t: 'eof', seq: 2, path: 'pages-1.img', ...fields });
    const twoChunks = [chunkFrame(1, 'pages-1.img', 0, chunk), chunkFrame(2, 'pages-1.img', K, chunk, crc32(chunk, crc32(chunk)))];
    const cases: Array<[object[], Record<string, number>, RegExp, ErrorCode]> = [
      [twoChunks, { maxFileBytes: K + 10 }, /streamed "pages-1\.img" grows past 262154 bytes/, ErrorCode.INVALID_ARGUMENT],
      [twoChunks, { maxTotalBytes: K + 10 }, /grows past 262154 bytes/, ErrorCode.INVALID_ARGUMENT],
      [[chunkFrame(1, 'pages-1.img', 0, chunk), eof({ crc: crc32(chunk), size: K + 1 })], {}, /streamed 262145 bytes, 262144 arrived/, ErrorCode.TRANSFER_FAILED],
      [[chunkFrame(1, 'pages-1.img', 0, chunk), eof({ crc: crc32(chunk) })], {}, /eof of streamed "pages-1\.img" without its size/, ErrorCode.INVALID_ARGUMENT],
      [[chunkFrame(1, 'pages-1.img', 0, chunk), eof({ crc: (crc32(chunk) ^ 1) >>> 0, size: K })], {}, /has crc32/, ErrorCode.TRANSFER_FAILED],
    ];
    for (const [frames, limits, problem, code] of cases) {
      const { id, dst } = await bed.freshTransfer();
      const receiver = ImageReceiver.start(bed.receiverNc, id, dst, limits);
      await receiver.ready();
      for (const frame of [{ ...fileFrame(0, 'pages-1.img', 0), streamed: true }, ...frames]) bed.senderNc.publish(subjects.xferData(id), encode(frame));
      const err = await rejection(receiver.done);
      expect(err.message).toMatch(problem);
      expect(err.code).toBe(code);
      // Nothing past the limit reached the disk.
      expect((await stat(join(dst, 'pages-1.img'))).size).toBeLessThanOrEqual(K);
    }
  });

  it('bounds a streamed body by the receiver\'s file limit: a longer one fails before it fills the disk', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const live = [liveFile('pages-1.img', randomBytes(8 * MIB))];
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { ...receiving, maxFileBytes: 2 * MIB });
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, transport: 'direct', live: liveThen(live, src, {}) });
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toMatch(/pages-1\.img.*past its bound of 2097152 bytes/);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await stat(join(dst, 'pages-1.img'))).size).toBeLessThanOrEqual(2 * MIB);
    // The writer (CRIU, in the agent) is not left blocked: its reader went away.
    await live[0]!.written.catch(() => undefined);
  });

  it('refuses an eof whose size is not what the streamed body carried', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const live = [liveFile('pages-1.img', randomBytes(MIB))];
    // A lying sender: its pump reports one byte more than it moved, and the eof frame says so.
    const liar: FilePump = { ...nativePump, pump: async (...args) => ({ ...(await nativePump.pump(...args)), bytesIn: MIB + 1 }) };
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, filePump: liar, transport: 'direct', live: liveThen(live, src, {}) });
    const err = await rejection(receiver.done);
    expect(err.message).toMatch(/pages-1\.img.*streamed 1048577 bytes, 1048576 arrived/);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails the sender promptly when the receiver aborts in the middle of a live body', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    // A slow writer (5 ms a MiB): the abort comes while it still writes.
    const live = [liveFile('pages-1.img', randomBytes(64 * MIB), 1)];
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, transport: 'direct', live: liveThen(live, src, {}) });
    sendingDone.catch(() => undefined);
    // Aborted once a few MiB of the body are on the receiver's disk.
    while (((await stat(join(dst, 'pages-1.img')).catch(() => undefined))?.size ?? 0) < 4 * MIB) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
    // The writer's reader is closed once the sender let go: its writes fail instead of blocking.
    await expect(live[0]!.written).rejects.toThrow();
  });

  it('refuses a streamed file frame that declares a size', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    bed.senderNc.publish(subjects.xferData(id), encode({ ...fileFrame(0, 'pages-1.img', 10), streamed: true }));
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(err.message).toMatch(/streamed file "pages-1\.img" declares a size/);
  });
});
