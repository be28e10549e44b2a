import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { LARGE_PAYLOAD_BYTES, MAX_PRESIZED_PAYLOAD_BYTES, presizeLargeNatsPayloads, recycleNatsPayload } from './nats-large-payloads';
import { startTestNatsServer, type TestNatsServer } from './test-nats-server';

// nats.js's own parser, the one its connections use (the version package.json pins).
const { Parser } = require('nats/lib/nats-base-client/parser') as {
  Parser: new (dispatcher: { push(event: { msg?: { subject: Uint8Array }; data?: Uint8Array }): void }) => {
    parse(buf: Uint8Array): void;
    msgBuf?: { capacity: number; length: number };
  };
};

const READ_BYTES = 64 * 1024;

/** The wire bytes nats-server sends for one message. */
function msgLine(subject: string, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`MSG ${subject} 1 ${payload.length}\r\n`), payload, Buffer.from('\r\n')]);
}

/**
 * A parser fed `wire` in socket-read-sized pieces; every message it dispatched (a copy, and the
 * parser's own view as `view`), and its buffer's capacity after each piece.
 */
function feed(wire: Buffer, pieceBytes = READ_BYTES): { messages: Array<{ subject: string; data: Buffer; view: Uint8Array }>; capacities: number[] } {
  const messages: Array<{ subject: string; data: Buffer; view: Uint8Array }> = [];
  const parser = new Parser({
    push: (event) => {
      if (event.data !== undefined && event.msg !== undefined) {
        messages.push({ subject: Buffer.from(event.msg.subject).toString(), data: Buffer.from(event.data), view: event.data });
      }
    },
  });
  const capacities: number[] = [];
  for (let offset = 0; offset < wire.length; offset += pieceBytes) {
    parser.parse(wire.subarray(offset, offset + pieceBytes));
    capacities.push(parser.msgBuf?.capacity ?? 0);
  }
  return { messages, capacities };
}

describe('presizeLargeNatsPayloads', () => {
  beforeAll(() => {
    // In effect with the pinned nats.js: if an upgrade changes its parser, this fails first.
    expect(presizeLargeNatsPayloads()).toBe(true);
    expect(presizeLargeNatsPayloads()).toBe(true);
  });

  it('collects a message spanning many reads in one buffer of its size, every byte intact', () => {
    const payload = randomBytes(4 * 1024 * 1024 + 123);
    const { messages, capacities } = feed(msgLine('xfer.data', payload));
    expect(messages).toHaveLength(1);
    expect(messages[0].subject).toBe('xfer.data');
    expect(messages[0].data.equals(payload)).toBe(true);
    // Sized once, at the first read, never grown after it.
    const collecting = capacities.filter((c) => c !== 0);
    expect(collecting.length).toBeGreaterThan(60);
    expect(new Set(collecting)).toEqual(new Set([payload.length]));
  });

  it('keeps messages in order across reads that split them anywhere, small ones untouched', () => {
    const small = randomBytes(100);
    const large = randomBytes(300_000);
    const empty = Buffer.alloc(0);
    const wire = Buffer.concat([msgLine('a', small), msgLine('b', large), msgLine('c', empty), msgLine('d', large), msgLine('e', small)]);
    // Pieces of odd sizes: a read ends inside MSG lines, payloads and the CRLF after them.
    for (const piece of [1, 7, 4093, READ_BYTES, 1 << 20]) {
      const { messages } = feed(wire, piece);
      expect(messages.map((m) => m.subject)).toEqual(['a', 'b', 'c', 'd', 'e']);
      expect(messages.map((m) => m.data.length)).toEqual([100, 300_000, 0, 300_000, 100]);
      expect(messages[1].data.equals(large) && messages[3].data.equals(large) && messages[4].data.equals(small)).toBe(true);
    }
  });

  it('collects the next large message of the same size in a recycled payload, and only in one it allocated', () => {
    const first = randomBytes(1024 * 1024);
    const [one] = feed(msgLine('x', first)).messages;
    expect(one.data.equals(first)).toBe(true);
    recycleNatsPayload(one.view);
    recycleNatsPayload(one.view); // twice: still one spare
    const second = randomBytes(1024 * 1024);
    const [two] = feed(msgLine('x', second)).messages;
    expect(two.view.buffer).toBe(one.view.buffer);
    expect(two.data.equals(second)).toBe(true);
    // Still held (not recycled again): the next message gets a buffer of its own.
    const [three] = feed(msgLine('x', randomBytes(1024 * 1024))).messages;
    expect(three.view.buffer).not.toBe(two.view.buffer);

    // A small message is a view of the socket read, which the parser did not allocate: ignored.
    const wire = Buffer.concat([msgLine('s', Buffer.alloc(1024 * 1024 - 64, 7))]);
    const small = feed(wire, wire.length).messages[0];
    recycleNatsPayload(small.view);
    const [four] = feed(msgLine('x', randomBytes(1024 * 1024 - 64))).messages;
    expect(four.view.buffer).not.toBe(small.view.buffer);
    expect(four.view.buffer).not.toBe(wire.buffer);
  });

  it('sizes a buffer at most MAX_PRESIZED_PAYLOAD_BYTES up front, whatever size a MSG line claims', () => {
    const parser = new Parser({ push: () => undefined });
    parser.parse(Buffer.from(`MSG huge 1 ${2 ** 40}\r\nxyz`));
    expect(parser.msgBuf?.capacity).toBe(MAX_PRESIZED_PAYLOAD_BYTES);
    expect(parser.msgBuf?.length).toBe(3);
  });

  describe('publishing through a real nats-server', () => {
    let server: TestNatsServer;
    const conns: NatsConnection[] = [];
    beforeAll(async () => {
      server = await startTestNatsServer();
    });
    afterAll(async () => {
      for (const nc of conns) await nc.close();
      await server.stop();
    });

    it('writes a large payload to the socket as it is, small parts gathered around it, every message intact and in order', async () => {
      const pub = await connect({ servers: server.url });
      const sub = await connect({ servers: server.url });
      conns.push(pub, sub);
      // nats-server's default max_payload is 1 MiB: payloads on both sides of the threshold below it.
      const payloads = [10, LARGE_PAYLOAD_BYTES, 3, 1000 * 1000, 0, LARGE_PAYLOAD_BYTES - 1, 700 * 1024, 17].map((n) => randomBytes(n));
      const got: Buffer[] = [];
      const all = new Promise<void>((resolve) => {
        sub.subscribe('big', {
          callback: (_err, msg) => {
            got.push(Buffer.from(msg.data));
            if (got.length === payloads.length) resolve();
          },
        });
      });
      await sub.flush();
      const transport = (pub as unknown as { protocol: { transport: { send(b: Uint8Array): void } } }).protocol.transport;
      const written: Uint8Array[] = [];
      const send = transport.send.bind(transport);
      transport.send = (bytes) => {
        written.push(bytes);
        send(bytes);
      };
      for (const p of payloads) pub.publish('big', p);
      await pub.flush();
      await all;
      expect(got.map((g) => g.length)).toEqual(payloads.map((p) => p.length));
      got.forEach((g, i) => expect(g.equals(payloads[i]!)).toBe(true));
      // The large ones went out by reference, no copy; the small ones were copied in with the PUB lines.
      for (const p of payloads) expect(written.includes(p)).toBe(p.length >= LARGE_PAYLOAD_BYTES);
    });
  });
});
