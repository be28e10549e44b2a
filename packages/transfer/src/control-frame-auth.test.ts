/**
 * Authenticated ack and ctl frames: the tag alone, then transfers against a real nats-server with
 * a third client (any principal allowed on ferry.v1.xfer.>, without the migration's key) forging
 * acks, aborts and errors.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { decode, encode, ErrorCode, IMAGE_KEY_BYTES, PROTOCOL_VERSION, subjects } from '@ferry/protocol';
import { CONTROL_MAC_BYTES, ControlFrameAuthenticator, ImageReceiver, sendImage } from './index';
import { connectDirect } from './direct-path';
import { directToken } from './control-frame-auth';
import { startTestNatsServer, type TestNatsServer } from './test-nats-server';
import { rejection } from './test-transfer-bed';

const MIB = 1024 * 1024;
const v = PROTOCOL_VERSION;
jest.setTimeout(60_000);

describe('ControlFrameAuthenticator', () => {
  const key = randomBytes(IMAGE_KEY_BYTES);
  const auth = new ControlFrameAuthenticator(key, 'x-1');

  it('accepts its own tags and nothing with a changed field, transfer, key or tag', () => {
    const ack = auth.sign({ t: 'ack', seq: 41 });
    const abort = auth.sign({ t: 'abort', code: 'TRANSFER_FAILED', message: 'disk full' });
    expect(ack.mac).toHaveLength(CONTROL_MAC_BYTES);
    expect(auth.verify(ack)).toBe(true);
    expect(auth.verify(abort)).toBe(true);
    // Another receiver of the same migration key and transfer verifies it too.
    expect(new ControlFrameAuthenticator(Buffer.from(key), 'x-1').verify(ack)).toBe(true);

    expect(auth.verify({ ...ack, seq: 42 })).toBe(false);
    expect(auth.verify({ ...abort, t: 'error' })).toBe(false); // an abort turned into a receiver's error
    expect(auth.verify({ ...abort, code: 'INTERNAL' })).toBe(false);
    expect(auth.verify({ ...abort, message: 'disk ful' })).toBe(false);
    expect(auth.verify({ t: 'ack', seq: 41 })).toBe(false); // no tag
    expect(auth.verify({ ...ack, mac: ack.mac.subarray(0, 16) })).toBe(false);
    const flipped = Buffer.from(ack.mac);
    flipped[5] ^= 1;
    expect(auth.verify({ ...ack, mac: flipped })).toBe(false);
    expect(new ControlFrameAuthenticator(key, 'x-2').verify(ack)).toBe(false);
    expect(new ControlFrameAuthenticator(randomBytes(IMAGE_KEY_BYTES), 'x-1').verify(ack)).toBe(false);
    // Field boundaries are unambiguous: moving bytes between code and message changes the tag.
    const a = auth.sign({ t: 'error', code: 'AB', message: 'C' });
    expect(auth.verify({ ...a, code: 'A', message: 'BC' })).toBe(false);
    expect(() => new ControlFrameAuthenticator(randomBytes(16), 'x-1')).toThrow(/32 bytes/);
  });

  it('tags direct offers over host, port and pump; derives the direct token per key and transfer', () => {
    const offer = auth.sign({ t: 'offer', host: '198.18.0.11', port: 4000, pump: true });
    expect(auth.verify(offer)).toBe(true);
    expect(auth.verify({ ...offer, host: '198.18.0.66' })).toBe(false);
    expect(auth.verify({ ...offer, port: 4001 })).toBe(false);
    expect(auth.verify({ ...offer, pump: false })).toBe(false);
    expect(auth.verify({ ...offer, t: 'ack', seq: 4000 } as never)).toBe(false);
    const token = directToken(key, 'x-1');
    expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(directToken(Buffer.from(key), 'x-1')).toBe(token);
    expect(directToken(key, 'x-2')).not.toBe(token);
    expect(directToken(randomBytes(IMAGE_KEY_BYTES), 'x-1')).not.toBe(token);
  });
});

describe('forged acks and ctl frames over a real nats-server', () => {
  let server: TestNatsServer;
  let senderNc: NatsConnection;
  let receiverNc: NatsConnection;
  let attackerNc: NatsConnection;
  let scratch: string;
  let n = 0;

  beforeAll(async () => {
    server = await startTestNatsServer();
    [senderNc, receiverNc, attackerNc] = await Promise.all([0, 1, 2].map(() => connect({ servers: server.url })));
    scratch = await mkdtemp(join(tmpdir(), 'ferry-ctl-auth-test-'));
  });

  afterAll(async () => {
    for (const nc of [senderNc, receiverNc, attackerNc]) await nc?.close();
    await server?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function fresh(): Promise<{ id: string; src: string; dst: string }> {
    n += 1;
    const src = join(scratch, `t${n}`, 'src');
    const dst = join(scratch, `t${n}`, 'dst');
    await mkdir(src, { recursive: true, mode: 0o700 });
    await mkdir(dst, { recursive: true, mode: 0o700 });
    return { id: `xa-${n}-${process.pid}`, src, dst };
  }

  it('ignores forged aborts, errors and acks in the middle of a transfer: it completes, intact', async () => {
    const { id, src, dst } = await fresh();
    const content = randomBytes(2 * MIB + 3);
    await writeFile(join(src, 'pages-1.img'), content);
    const key = randomBytes(IMAGE_KEY_BYTES);
    const wrongKey = new ControlFrameAuthenticator(randomBytes(IMAGE_KEY_BYTES), id);
    let forgedAt = -1;
    // Once data flows, the attacker fires everything it can make without the key.
    const sub = attackerNc.subscribe(subjects.xferData(id), {
      callback: () => {
        if (forgedAt >= 0) return;
        forgedAt = 0;
        const ctl = subjects.xferCtl(id);
        const ack = subjects.xferAck(id);
        attackerNc.publish(ctl, encode({ v, t: 'abort', code: 'TRANSFER_FAILED', message: 'forged abort' }));
        attackerNc.publish(ctl, encode({ v, t: 'error', code: 'TRANSFER_FAILED', message: 'forged error' }));
        attackerNc.publish(ctl, encode({ v, ...wrongKey.sign({ t: 'abort', code: 'TRANSFER_FAILED', message: 'wrong key' }) }));
        attackerNc.publish(ctl, encode({ v, ...wrongKey.sign({ t: 'error', code: 'TRANSFER_FAILED', message: 'wrong key' }) }));
        attackerNc.publish(ctl, randomBytes(40));
        attackerNc.publish(ack, encode({ v, t: 'ack', seq: 10_000 }));
        attackerNc.publish(ack, encode({ v, ...wrongKey.sign({ t: 'ack', seq: 3 }) }));
        attackerNc.publish(ack, encode({ v, t: 'ack', seq: 3, mac: randomBytes(CONTROL_MAC_BYTES) }));
        attackerNc.publish(ack, randomBytes(40));
      },
    });
    await attackerNc.flush();
    const receiver = ImageReceiver.start(receiverNc, id, dst, { imageKey: key });
    await receiver.ready();
    const stats = await sendImage(senderNc, id, src, { imageKey: key, transport: 'nats', chunkBytes: 256 * 1024 });
    sub.unsubscribe();
    expect(forgedAt).toBe(0);
    expect(stats.files).toBe(1);
    expect((await receiver.done).bytes).toBe(content.length);
    expect((await readFile(join(dst, 'pages-1.img'))).equals(content)).toBe(true);
  });

  it('forged acks cannot fake progress: with the key the sender waits for the real receiver; without one they would fool it', async () => {
    for (const keyed of [true, false]) {
      const { id, src } = await fresh();
      await writeFile(join(src, 'pages-1.img'), randomBytes(MIB));
      // No receiver at all: only the attacker answers, acking every data frame as it passes.
      const sub = attackerNc.subscribe(subjects.xferData(id), {
        callback: (_e, msg) => {
          const frame = decode(msg.data) as { seq: number };
          attackerNc.publish(subjects.xferAck(id), encode({ v, t: 'ack', seq: frame.seq }));
        },
      });
      await attackerNc.flush();
      const sending = sendImage(senderNc, id, src, {
        imageKey: keyed ? randomBytes(IMAGE_KEY_BYTES) : null,
        transport: 'nats',
        chunkBytes: 256 * 1024,
        idleTimeoutMs: 1_500,
      });
      if (keyed) {
        const err = await rejection(sending);
        expect(err.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
      } else {
        // The control: the attack is real without authentication.
        expect((await sending).files).toBe(1);
      }
      sub.unsubscribe();
    }
  });

  it('a keyed offer names no token and carries a tag; an offer forged by another principal is refused, never connected to, and the image arrives intact', async () => {
    const { id, src, dst } = await fresh();
    const body = randomBytes(3 * MIB);
    await writeFile(join(src, 'pages-1.img'), body);
    const key = randomBytes(IMAGE_KEY_BYTES);
    // The attacker answers the direct subject first with an endpoint of its own (and the real receiver is slower).
    let attackerConnections = 0;
    const trap = (await import('node:net')).createServer((s) => {
      attackerConnections += 1;
      s.destroy();
    });
    await new Promise<void>((r) => trap.listen(0, '127.0.0.1', () => r()));
    const trapPort = (trap.address() as { port: number }).port;
    const forged = attackerNc.subscribe(subjects.xferDirect(id), {
      callback: (_e, msg) => msg.respond(encode({ v, t: 'offer', host: '127.0.0.1', port: trapPort, token: 'c'.repeat(32), mac: randomBytes(32) })),
    });
    await attackerNc.flush();
    try {
      // What the real receiver offers, as whoever reads the bus sees it: no token, a tag.
      const probeId = `${id}-probe`;
      const probe = ImageReceiver.start(receiverNc, probeId, dst, { imageKey: key, directListenAddress: '127.0.0.1' });
      await probe.ready();
      const offer = decode((await senderNc.request(subjects.xferDirect(probeId), encode({ v, t: 'direct' }))).data) as Record<string, unknown>;
      expect(offer).toMatchObject({ t: 'offer', host: '127.0.0.1' });
      expect(offer.token).toBeUndefined();
      expect(new ControlFrameAuthenticator(key, probeId).verify(offer as never)).toBe(true);
      probe.abort('probe done');
      await probe.done.catch(() => undefined);

      // Alone on the subject, the forged offer (with a token, with a made-up tag, or with none) is refused.
      const auth = new ControlFrameAuthenticator(key, id);
      const refused = await connectDirect(senderNc, id, 1024, { offerMs: 1_000, connectMs: 1_000 }, true, { imageKey: key, auth });
      expect(refused).toEqual({ reason: expect.stringMatching(/not authenticated with the migration key/) });

      // With the real receiver answering too (whichever answer comes first), the image arrives whole.
      const receiver = ImageReceiver.start(receiverNc, id, dst, { imageKey: key, directListenAddress: '127.0.0.1' });
      await receiver.ready();
      await sendImage(senderNc, id, src, { imageKey: key, transport: 'auto', idleTimeoutMs: 10_000 });
      await receiver.done;
      expect((await readFile(join(dst, 'pages-1.img'))).equals(body)).toBe(true);
      // The sender never went to the attacker's endpoint.
      expect(attackerConnections).toBe(0);
    } finally {
      forged.unsubscribe();
      trap.close();
    }
  });

  it("the peers' own tagged error and abort still end the transfer on both sides", async () => {
    // The receiver refuses the file (size limit): its tagged error fails the sender with its code.
    const { id, src, dst } = await fresh();
    await writeFile(join(src, 'pages-1.img'), randomBytes(64 * 1024));
    const key = randomBytes(IMAGE_KEY_BYTES);
    const receiver = ImageReceiver.start(receiverNc, id, dst, { imageKey: key, maxFileBytes: 1024 });
    await receiver.ready();
    const err = await rejection(sendImage(senderNc, id, src, { imageKey: key, transport: 'nats', idleTimeoutMs: 10_000 }));
    expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(err.message).toMatch(/receiver failed: .*more than the limit/);
    expect((await rejection(receiver.done)).code).toBe(ErrorCode.INVALID_ARGUMENT);

    // The sender's tagged abort (it insists on a direct path this receiver does not offer) fails a receiver holding the key.
    const second = await fresh();
    await writeFile(join(second.src, 'pages-1.img'), 'x');
    const receiver2 = ImageReceiver.start(receiverNc, second.id, second.dst, { imageKey: key });
    await receiver2.ready();
    expect((await rejection(sendImage(senderNc, second.id, second.src, { imageKey: key, transport: 'direct' }))).code).toBe(ErrorCode.UNAVAILABLE);
    const aborted = await rejection(receiver2.done);
    expect(aborted.code).toBe(ErrorCode.TRANSFER_FAILED);
    expect(aborted.message).toMatch(/sender aborted/);
  });
});
