/**
 * Large NATS messages collected in one buffer of their own size, not a doubling one, and
 * published without a copy.
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
 * Sending, nats.js copies every publish into one fresh buffer (its outbound DataBuffer's pack)
 * before the socket write: on the sending agent of a 512 MiB migration over NATS that copy was
 * 0.5 s of its main thread, and its 4 MiB allocations drove most of the agent's major garbage
 * collections (V8's concurrent marking threads, `perf record`). flushPending is wrapped so a
 * payload of LARGE_PAYLOAD_BYTES or more goes to the socket as it is, the small parts around it
 * (the PUB line, CRLF, other messages) still gathered into one write. The socket then holds the
 * caller's buffer until it is written, where nats.js had copied it at the next microtask: a
 * caller must not change a large payload after publishing it (ferry's image sender reuses a
 * buffer only once the receiver acknowledged its frame; everything else publishes fresh ones).
 *
 * nats.js internals (its parser's state, msgBuf, ma.size, DenoBuffer, the protocol handler's
 * outbound buffers and transport) are pinned by the exact version in package.json;
 * `presizeLargeNatsPayloads` returns false and changes nothing if they are not what it expects,
 * and its unit test fails then, so an upgrade cannot silently lose it.
 */
import { createRequire } from 'node:module';

/** Largest buffer sized up front for one message (nats-server's own max_payload limit is 64 MiB). */
export const MAX_PRESIZED_PAYLOAD_BYTES = 64 * 1024 * 1024;
/** A published payload this large is written to the socket by reference, not copied first. */
export const LARGE_PAYLOAD_BYTES = 256 * 1024;

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

/** What this file uses of nats.js's ProtocolHandler. */
interface ProtocolState {
  infoReceived: boolean;
  connected: boolean;
  outbound: { buffers: Uint8Array[]; reset(): void };
  transport: { send(bytes: Uint8Array): void };
}

type FlushFn = (this: ProtocolState) => void;

let installed = false;

/**
 * Payload buffers handed back by their consumer (recycleNatsPayload) for the next large message.
 * Fresh 4 MiB buffers cost the receiver page faults on first touch and garbage collections (V8
 * collects when external memory grows); reused ones cost neither.
 */
const spareBuffers: ArrayBuffer[] = [];
/** Enough for a window of image frames in flight (32 MiB) with room; more is left to the GC. */
const MAX_SPARE_BUFFERS = 10;
/** Buffers this file allocated: only those may come back (a small message is a view of a socket read). */
const presizedBuffers = new WeakSet<ArrayBuffer>();

function takeBuffer(bytes: number): ArrayBuffer {
  // Only a buffer of exactly this size (every image frame but a file's last chunk has the same).
  const at = spareBuffers.findIndex((b) => b.byteLength === bytes);
  if (at !== -1) return spareBuffers.splice(at, 1)[0];
  const fresh = Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
  presizedBuffers.add(fresh);
  return fresh;
}

/**
 * Hands a large message's payload back once nothing reads or writes any part of it any more (the
 * frame is written to its file): the next large message of that size is collected in it. Anything
 * this file did not allocate, or too many, is ignored. Never recycle a payload a consumer still holds.
 */
export function recycleNatsPayload(payload: Uint8Array): void {
  const buffer = payload.buffer as ArrayBuffer;
  if (!presizedBuffers.has(buffer) || spareBuffers.includes(buffer) || spareBuffers.length >= MAX_SPARE_BUFFERS) return;
  spareBuffers.push(buffer);
}

/**
 * Makes every nats.js connection in this process collect a large message in one buffer of its
 * size, and write a large payload without copying it. Idempotent. Returns whether it is in effect.
 */
export function presizeLargeNatsPayloads(): boolean {
  if (installed) return true;
  const load = createRequire(require.resolve('nats'));
  let parserModule: { Parser?: { prototype: { parse?: ParseFn } }; State?: { MSG_PAYLOAD?: unknown } };
  let bufferModule: { DenoBuffer?: new (ab: ArrayBufferLike) => CollectingBuffer };
  let protocolModule: { ProtocolHandler?: { prototype: { flushPending?: FlushFn } } };
  let dataBufferModule: { DataBuffer?: { concat?: (...parts: Uint8Array[]) => Uint8Array } };
  try {
    parserModule = load('./lib/nats-base-client/parser');
    bufferModule = load('./lib/nats-base-client/denobuffer');
    protocolModule = load('./lib/nats-base-client/protocol');
    dataBufferModule = load('./lib/nats-base-client/databuffer');
  } catch {
    return false;
  }
  const parser = parserModule.Parser?.prototype;
  const msgPayload = parserModule.State?.MSG_PAYLOAD;
  const DenoBuffer = bufferModule.DenoBuffer;
  const parse = parser?.parse;
  const protocol = protocolModule.ProtocolHandler?.prototype;
  const flush = protocol?.flushPending;
  const concat = dataBufferModule.DataBuffer?.concat;
  if (parser === undefined || typeof parse !== 'function' || typeof msgPayload !== 'number' || typeof DenoBuffer !== 'function') return false;
  if (protocol === undefined || typeof flush !== 'function' || typeof concat !== 'function') return false;
  const gather = concat.bind(dataBufferModule.DataBuffer);

  protocol.flushPending = function gatheringFlush(this: ProtocolState): void {
    const parts = this.outbound?.buffers;
    // nats.js's own flush unless there is a large payload to spare a copy of (and while it is
    // not connected, it keeps everything queued: its flush does nothing then).
    if (!this.infoReceived || !this.connected || !Array.isArray(parts) || !parts.some((p) => p.byteLength >= LARGE_PAYLOAD_BYTES)) {
      flush.call(this);
      return;
    }
    const queued = parts.slice();
    this.outbound.reset();
    let small: Uint8Array[] = [];
    const sendSmall = (): void => {
      if (small.length > 0) this.transport.send(small.length === 1 ? small[0]! : gather(...small));
      small = [];
    };
    for (const part of queued) {
      if (part.byteLength < LARGE_PAYLOAD_BYTES) {
        small.push(part);
        continue;
      }
      sendSmall();
      this.transport.send(part);
    }
    sendSmall();
  };

  parser.parse = function presizingParse(this: ParserState, buf: Uint8Array): void {
    parse.call(this, buf);
    const collecting = this.msgBuf;
    const size = this.ma?.size;
    if (this.state !== msgPayload || collecting === undefined || typeof size !== 'number') return;
    const wanted = Math.min(size, MAX_PRESIZED_PAYLOAD_BYTES);
    if (collecting.capacity >= wanted) return;
    // Uninitialised (or a recycled payload's) memory is fine: the parser hands out only the bytes
    // written (its length), and a payload is recycled only once its consumer is done with it.
    const presized = new DenoBuffer(takeBuffer(wanted));
    presized.reset();
    presized.write(collecting.bytes({ copy: false }));
    this.msgBuf = presized;
  };
  installed = true;
  return true;
}
