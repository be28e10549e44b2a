import { randomBytes } from 'node:crypto';
import { MAX_PRESIZED_PAYLOAD_BYTES, presizeLargeNatsPayloads } from './nats-large-payloads';

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

/** A parser fed `wire` in socket-read-sized pieces; every message it dispatched, and its buffer's capacity after each piece. */
function feed(wire: Buffer, pieceBytes = READ_BYTES): { messages: Array<{ subject: string; data: Buffer }>; capacities: number[] } {
  const messages: Array<{ subject: string; data: Buffer }> = [];
  const parser = new Parser({
    push: (event) => {
      if (event.data !== undefined && event.msg !== undefined) messages.push({ subject: Buffer.from(event.msg.subject).toString(), data: Buffer.from(event.data) });
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

  it('sizes a buffer at most MAX_PRESIZED_PAYLOAD_BYTES up front, whatever size a MSG line claims', () => {
    const parser = new Parser({ push: () => undefined });
    parser.parse(Buffer.from(`MSG huge 1 ${2 ** 40}\r\nxyz`));
    expect(parser.msgBuf?.capacity).toBe(MAX_PRESIZED_PAYLOAD_BYTES);
    expect(parser.msgBuf?.length).toBe(3);
  });
});
