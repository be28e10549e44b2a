/**
 * What an image receiver refuses, against a real nats-server with a test playing the sender frame
 * by frame: corrupt chunks, file names that leave the target directory, malformed frames, and
 * images over the receiver's limits. Each is refused with its error code, on both sides where the
 * sender is real, and nothing is written outside the target directory.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { encode, ErrorCode, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { ImageReceiver, sendImage, type ImageReceiverOptions } from './index';
import { chunkFrame, fileFrame, rejection, TransferTestBed } from './test-transfer-bed';

jest.setTimeout(60_000);

const bed = TransferTestBed.install();
const v = PROTOCOL_VERSION;

describe('corruption', () => {
  it('fails a chunk whose crc does not match with TRANSFER_FAILED and tells the sender', async () => {
    const { id, dst } = await bed.freshTransfer();
    const ctl = bed.watchCtl(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const data = randomBytes(1000);
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 1000), chunkFrame(1, 'a.img', 0, data, (crc32(data) + 1) >>> 0)]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await bed.receiverNc.flush();
    await bed.senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.TRANSFER_FAILED }));
    ctl.stop();
  });

  it('fails a file whose whole-file crc32 does not match with TRANSFER_FAILED', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const data = randomBytes(10);
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(1, 'a.img', 0, data), { v, t: 'eof', seq: 2, path: 'a.img', crc: (crc32(data) + 1) >>> 0 }]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails a second chunk whose crc is its own instead of the running crc of the file', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const [first, second] = [randomBytes(10), randomBytes(10)];
    // Each chunk alone is intact; only the chain shows the second was not meant to follow the first.
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 20), chunkFrame(1, 'a.img', 0, first), chunkFrame(2, 'a.img', 10, second, crc32(second))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails on a lost frame (sequence gap) with TRANSFER_FAILED', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10), chunkFrame(2, 'a.img', 0, randomBytes(10))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it.each([
    ['out of order', [chunkFrame(1, 'a.img', 5, Buffer.alloc(5))]],
    ['overlapping', [chunkFrame(1, 'a.img', 0, Buffer.alloc(6)), chunkFrame(2, 'a.img', 3, Buffer.alloc(4))]],
    ['beyond the declared size', [chunkFrame(1, 'a.img', 0, Buffer.alloc(11))]],
    ['for another file', [chunkFrame(1, 'b.img', 0, Buffer.alloc(1))]],
    ['empty', [chunkFrame(1, 'a.img', 0, Buffer.alloc(0))]],
  ])('rejects a chunk %s with INVALID_ARGUMENT', async (_what, chunks) => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 10), ...chunks]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});

describe('file names', () => {
  it.each(['../evil', '/ABSOLUTE', 'sub/../../evil', 'nul\0byte', 'a//b'])('rejects %j and writes nothing outside', async (name) => {
    const { id, dst, parent } = await bed.freshTransfer();
    const absolute = join(parent, 'absolute-target');
    const path = name === '/ABSOLUTE' ? absolute : name;
    const ctl = bed.watchCtl(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, path, 4), chunkFrame(1, path, 0, Buffer.from('evil'))]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await bed.receiverNc.flush();
    await bed.senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.INVALID_ARGUMENT }));
    ctl.stop();
    expect(await readdir(dst)).toEqual([]);
    expect((await readdir(parent)).sort()).toEqual(['dst', 'src']);
  });

  it('does not follow a symlink found in the directory', async () => {
    const { id, dst, parent } = await bed.freshTransfer();
    const outside = join(parent, 'outside');
    await mkdir(outside);
    await symlink(outside, join(dst, 'link'));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [fileFrame(0, 'link/x.img', 1)]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(join(dst, 'link'))).isSymbolicLink()).toBe(true);
  });

  it('refuses a file name sent twice', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    const eof = (seq: number) => ({ v, t: 'eof', seq, path: 'a.img', crc: 0 });
    await bed.publishRaw(id, [fileFrame(0, 'a.img', 0), eof(1), fileFrame(2, 'a.img', 0)]);
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
    const { id, dst } = await bed.freshTransfer();
    const ctl = bed.watchCtl(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [frame]);
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
    // The receiver's error goes out on its own connection: flush that one, then ours, before looking.
    await bed.receiverNc.flush();
    await bed.senderNc.flush();
    expect(ctl.frames).toContainEqual(expect.objectContaining({ t: 'error', code: ErrorCode.INVALID_ARGUMENT }));
    ctl.stop();
  });

  it('refuses another protocol version with FAILED_PRECONDITION', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    await bed.publishRaw(id, [{ ...fileFrame(0, 'a.img', 1), v: PROTOCOL_VERSION + 1 }]);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.FAILED_PRECONDITION);
  });

  it('fails on a malformed ctl frame', async () => {
    const { id, dst } = await bed.freshTransfer();
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst);
    await receiver.ready();
    bed.senderNc.publish(subjects.xferCtl(id), Buffer.from('not msgpack at all \xc1'));
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
    const { id, src, dst } = await bed.freshTransfer();
    await threeFiles(src);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, limits);
    await receiver.ready();
    const senderErr = await rejection(sendImage(bed.senderNc, id, src, { idleTimeoutMs: 5_000 }));
    expect(senderErr.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(senderErr.message).toContain('receiver failed');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);
    const written = await Promise.all((await readdir(dst)).map(async (n) => (await stat(join(dst, n))).size));
    expect(written.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(250 * 1024);
  });
});
