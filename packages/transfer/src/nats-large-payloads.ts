/**
 * Large NATS messages collected in one buffer of their own size, not a doubling one.
 *
 * Why: nats.js 2.29 collects a message that spans several socket reads in a buffer that starts at
 * the size of the first read's leftover (at most 64 KiB) and doubles as the rest arrives, so a
 * 4 MiB image frame costs about seven fresh zero-filled buffers, two copies of itself and the
 * garbage they leave. Profiled on the receiving side of a 512 MiB transfer over NATS
 * (bench/transfer-micro.js, BENCH_PROF=1): 22% of its time in that buffer's growth and copies, 18%
 * in the garbage collector, and the receiver was the bottleneck. The message's size is known from
 * its MSG line before the first payload byte, so the buffer can be sized once.
 *
 * How: Parser.prototype.parse is wrapped; after a read leaves the parser collecting a payload in a
 * buffer smaller than the message, that buffer is replaced by one of the message's size holding
 * the same bytes (at most one socket read copied again). The size comes from nats-server, which
 * bounds it by its max_payload; the buffer is sized at most MAX_PRESIZED_PAYLOAD_BYTES regardless,
 * beyond which it grows as before. Everything else the parser does is unchanged.
 *
 * nats.js internals (its parser's state, msgBuf, ma.size and DenoBuffer) are pinned by the exact
 * version in package.json; `presizeLargeNatsPayloads` returns false and changes nothing if they are
 * not what it expects, and its unit test fails then, so an upgrade cannot silently lose it.
 */
import { createRequire } from 'node:module';

/** Largest buffer sized up front for one message (nats-server's own max_payload limit is 64 MiB). */
export const MAX_PRESIZED_PAYLOAD_BYTES = 64 * 1024 * 1024;

/** What this file uses of nats.js's DenoBuffer. */
interface CollectingBuffer {
  readonly length: number;
  readonly capacity: number;
  bytes(options: { copy: boolean }): Uint8Array;
  reset(): void;
  write(bytes: Uint8Array): number;
}

/** What this file uses of nats.js's Parser. */
interface ParserState {
  state: number;
  msgBuf?: CollectingBuffer;
  ma?: { size?: unknown };
}

type ParseFn = (this: ParserState, buf: Uint8Array) => void;

let installed = false;

/**
 * Makes every nats.js connection in this process collect a large message in one buffer of its
 * size. Idempotent. Returns whether it is in effect.
 */
export function presizeLargeNatsPayloads(): boolean {
  if (installed) return true;
  const load = createRequire(require.resolve('nats'));
  let parserModule: { Parser?: { prototype: { parse?: ParseFn } }; State?: { MSG_PAYLOAD?: unknown } };
  let bufferModule: { DenoBuffer?: new (ab: ArrayBufferLike) => CollectingBuffer };
  try {
    parserModule = load('./lib/nats-base-client/parser');
    bufferModule = load('./lib/nats-base-client/denobuffer');
  } catch {
    return false;
  }
  const parser = parserModule.Parser?.prototype;
  const msgPayload = parserModule.State?.MSG_PAYLOAD;
  const DenoBuffer = bufferModule.DenoBuffer;
  const parse = parser?.parse;
  if (parser === undefined || typeof parse !== 'function' || typeof msgPayload !== 'number' || typeof DenoBuffer !== 'function') return false;

  parser.parse = function presizingParse(this: ParserState, buf: Uint8Array): void {
    parse.call(this, buf);
    const collecting = this.msgBuf;
    const size = this.ma?.size;
    if (this.state !== msgPayload || collecting === undefined || typeof size !== 'number') return;
    const wanted = Math.min(size, MAX_PRESIZED_PAYLOAD_BYTES);
    if (collecting.capacity >= wanted) return;
    // Uninitialised memory is fine: the parser hands out only the bytes written (its length).
    const presized = new DenoBuffer(Buffer.allocUnsafeSlow(wanted).buffer);
    presized.reset();
    presized.write(collecting.bytes({ copy: false }));
    this.msgBuf = presized;
  };
  installed = true;
  return true;
}
