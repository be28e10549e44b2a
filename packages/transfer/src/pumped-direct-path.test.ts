/**
 * The pumped direct path (file-pump.ts) against a real nats-server and @ferry/native's real sealed
 * pump: file bodies as sealed streams on the TCP connection, control frames over NATS; and what
 * the receiver does with a sender that lies about a body (longer than declared, forged, cut).
 */
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decode, encode, ErrorCode, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import type { FilePump } from './file-pump';
import { ImageReceiver, sendImage } from './index';
import { MIB, rejection, TransferTestBed } from './test-transfer-bed';
import { nativePump } from './test-native-pump';

jest.setTimeout(60_000);

const bed = TransferTestBed.install();
const KEY = randomBytes(32);


const receiving = { directListenAddress: '127.0.0.1', imageKey: KEY, filePump: nativePump };
const sending = { imageKey: KEY, filePump: nativePump, transport: 'direct' as const };

describe('pumped direct path', () => {
  it('moves every file body through the pump, byte-identical, modes kept, only control frames on NATS', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const pages = randomBytes(24 * MIB + 5);
    await writeFile(join(src, 'pages-1.img'), pages);
    await writeFile(join(src, 'core-1.img'), randomBytes(777));
    await chmod(join(src, 'core-1.img'), 0o400);
    await writeFile(join(src, 'empty.img'), Buffer.alloc(0));
    const data = bed.watchData(id);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sent = await sendImage(bed.senderNc, id, src, sending);
    const received = await receiver.done;
    await bed.senderNc.flush();
    data.stop();
    const bytes = pages.length + 777;
    expect(sent).toMatchObject({ transport: 'direct', files: 3, bytes, chunks: 3 });
    expect(received).toMatchObject({ transport: 'direct', files: 3, bytes, chunks: 3 });
    // file + eof per file, and end: no chunk frame crossed NATS.
    expect(data.count()).toBe(3 * 2 + 1);
    expect((await readFile(join(dst, 'pages-1.img'))).equals(pages)).toBe(true);
    expect((await stat(join(dst, 'core-1.img'))).mode & 0o777).toBe(0o400);
    expect((await stat(join(dst, 'empty.img'))).size).toBe(0);
  });

  it('sends chunk frames over the connection when the receiver has no pump', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    const content = randomBytes(3 * MIB);
    await writeFile(join(src, 'a.img'), content);
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { directListenAddress: '127.0.0.1', imageKey: KEY });
    await receiver.ready();
    // Chunk frames of under 1 MiB (the test server's max_payload) over the connection.
    await expect(sendImage(bed.senderNc, id, src, sending)).resolves.toMatchObject({ transport: 'direct', chunks: 4 });
    await expect(receiver.done).resolves.toMatchObject({ transport: 'direct' });
    expect((await readFile(join(dst, 'a.img'))).equals(content)).toBe(true);
  });

  it('refuses a body longer than its file frame declared, writing nothing past the declared size', async () => {
    const { id, src, dst, parent } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(MIB));
    // A lying sender: it announces a.img's 1 MiB and pumps 8 MiB from elsewhere.
    const longer = join(parent, 'longer');
    await writeFile(longer, randomBytes(8 * MIB));
    const liar: FilePump = {
      ...nativePump,
      pump: async (inFd, outFd, mode, key, prefix, options) => {
        const fh = await open(longer, 'r');
        try {
          return await nativePump.pump(fh.fd, outFd, mode, key, prefix, options);
        } finally {
          await fh.close();
        }
      },
    };
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, filePump: liar });
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(err.message).toMatch(/a\.img.*past its bound of 1048576 bytes/);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await stat(join(dst, 'a.img'))).size).toBeLessThanOrEqual(MIB);
  });

  it('refuses a body sealed under another key (forged), before writing any of it', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(2 * MIB));
    const forger: FilePump = { ...nativePump, pump: (inFd, outFd, mode, _key, prefix, options) => nativePump.pump(inFd, outFd, mode, randomBytes(32), prefix, options) };
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, filePump: forger });
    const err = await rejection(receiver.done);
    expect(err.message).toMatch(/a\.img.*authentication failed/);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await stat(join(dst, 'a.img'))).size).toBe(0);
  });

  it('fails both sides, without hanging, when the receiver aborts in the middle of a body', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(64 * MIB));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, receiving);
    await receiver.ready();
    const sendingDone = sendImage(bed.senderNc, id, src, sending);
    sendingDone.catch(() => undefined);
    while (receiver.progress().bytes === 0) await new Promise((r) => setTimeout(r, 1));
    receiver.abort('operator cancelled');
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.TRANSFER_FAILED);
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
  });

  it('fails the receiver when the sender stops in the middle of a body (a cut stream is never a whole file)', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'big.img'), randomBytes(64 * MIB));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { ...receiving, idleTimeoutMs: 5_000 });
    await receiver.ready();
    // A sender whose pump stops after the first MiB, as a crashed source agent would.
    const quitter: FilePump = {
      ...nativePump,
      pump: (inFd, outFd, mode, key, prefix, options) => {
        const stop = new AbortController();
        options.signal.addEventListener('abort', () => stop.abort());
        const pumping = nativePump.pump(inFd, outFd, mode, key, prefix, { ...options, signal: stop.signal });
        const timer = setInterval(() => {
          if (nativePump.offset(inFd) >= MIB) stop.abort();
        }, 1);
        return pumping.finally(() => clearInterval(timer));
      },
    };
    const sendingDone = sendImage(bed.senderNc, id, src, { ...sending, filePump: quitter });
    expect((await rejection(sendingDone)).code).toBe(ErrorCode.TRANSFER_FAILED);
    const err = await rejection(receiver.done);
    expect(err.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(await readdir(dst)).toEqual(['big.img']);
    expect((await stat(join(dst, 'big.img'))).size).toBeLessThan(64 * MIB);
  });

  it('offers the pump only with a key: a hello asking for it otherwise is dropped', async () => {
    const { id, src, dst } = await bed.freshTransfer();
    await writeFile(join(src, 'a.img'), randomBytes(1000));
    const receiver = ImageReceiver.start(bed.receiverNc, id, dst, { directListenAddress: '127.0.0.1', filePump: nativePump });
    await receiver.ready();
    const offer = decode((await bed.senderNc.request(subjects.xferDirect(id), encode({ v: PROTOCOL_VERSION, t: 'direct' }))).data) as Record<string, unknown>;
    expect(offer).toMatchObject({ t: 'offer' });
    expect(offer.pump).toBeUndefined();
    receiver.abort('test over');
    await rejection(receiver.done);
  });
});
