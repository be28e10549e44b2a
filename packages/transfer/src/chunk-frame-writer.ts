/**
 * Lays out a chunk frame by hand so the file's bytes are read straight into the message that
 * goes to NATS. Packing a Buffer with msgpackr copies it into a freshly allocated output buffer;
 * at 512 KiB a chunk that copy plus the extra allocation cost the sender a fifth of its
 * throughput (measured, see README). The layout is plain msgpack, the same map the generic
 * encoder would produce (with fixed-width integers), so the receiver decodes it like any other frame.
 */
import { PROTOCOL_VERSION } from '@ferry/protocol';

const MSGPACK_FIXMAP_7 = 0x87;
const MSGPACK_UINT32 = 0xce;
const MSGPACK_UINT64 = 0xcf;
const MSGPACK_STR16 = 0xda;
const MSGPACK_BIN32 = 0xc6;
const UINT32_LIMIT = 0x1_0000_0000;

function fixstr(text: string): Buffer {
  const bytes = Buffer.from(text);
  return Buffer.concat([Buffer.from([0xa0 | bytes.length]), bytes]);
}
const KEY_V = fixstr('v');
const KEY_T = fixstr('t');
const VALUE_CHUNK = fixstr('chunk');
const KEY_SEQ = fixstr('seq');
const KEY_PATH = fixstr('path');
const KEY_OFFSET = fixstr('offset');
const KEY_CRC = fixstr('crc');
const KEY_DATA = fixstr('data');
/** Fixed-width parts: map, v, t, keys, 9-byte uints, str16 header, crc, bin32 header. */
const FIXED_HEADER_BYTES =
  1 + KEY_V.length + 1 + KEY_T.length + VALUE_CHUNK.length + KEY_SEQ.length + 9 + KEY_PATH.length + 3 +
  KEY_OFFSET.length + 9 + KEY_CRC.length + 5 + KEY_DATA.length + 5;

/** A chunk frame whose `data` is to be filled in place before `setCrc()` and publishing. */
export interface ChunkFrameBuffer {
  /** The whole msgpack message. */
  frame: Buffer;
  /** View of the payload area inside `frame`; read the file into it. */
  data: Buffer;
  /** Writes the crc32 of `data` into the frame. */
  setCrc(crc: number): void;
  /** The whole allocation: `reserve.head` bytes, the frame, `reserve.tail` bytes (FrameSealer.sealReserved). */
  envelope: Buffer;
}

/** Room left free before and after a frame, for an envelope written around it in place. */
export interface FrameReserve {
  head: number;
  tail: number;
}

function writeUint64(buf: Buffer, at: number, value: number): number {
  buf[at] = MSGPACK_UINT64;
  buf.writeUInt32BE(Math.floor(value / UINT32_LIMIT), at + 1);
  buf.writeUInt32BE(value % UINT32_LIMIT, at + 5);
  return at + 9;
}

function put(buf: Buffer, at: number, part: Buffer): number {
  part.copy(buf, at);
  return at + part.length;
}

/**
 * Chunk buffers handed back once their frame is acknowledged (the receiver has it, so neither NATS
 * nor a socket holds it any more): the next chunk of the same size is read into one. A fresh 4 MiB
 * buffer per chunk cost the sender a page fault per 4 KiB on its first touch and garbage
 * collections; a bare NATS publisher reuses one buffer.
 */
export class ChunkBufferPool {
  private readonly spare: Buffer[] = [];

  constructor(private readonly maxSpare: number) {}

  /** A buffer of exactly `bytes`: a spare one if there is one. */
  take(bytes: number): Buffer {
    const at = this.spare.findIndex((b) => b.byteLength === bytes);
    return at === -1 ? Buffer.allocUnsafeSlow(bytes) : this.spare.splice(at, 1)[0]!;
  }

  /** Hands `buffer` back; nothing may read or write it afterwards. */
  give(buffer: Buffer): void {
    if (this.spare.length < this.maxSpare && !this.spare.includes(buffer)) this.spare.push(buffer);
  }
}

/**
 * Allocates `{v, t:'chunk', seq, path, offset, crc, data}` with room for `dataBytes` of data, and
 * `reserve` bytes free around it (from `pool` if given).
 */
export function allocChunkFrame(
  seq: number,
  path: string,
  offset: number,
  dataBytes: number,
  reserve: FrameReserve = { head: 0, tail: 0 },
  pool?: ChunkBufferPool,
): ChunkFrameBuffer {
  const pathBytes = Buffer.from(path);
  const frameBytes = FIXED_HEADER_BYTES + pathBytes.length + dataBytes;
  const total = reserve.head + frameBytes + reserve.tail;
  const envelope = pool ? pool.take(total) : Buffer.allocUnsafe(total);
  const frame = envelope.subarray(reserve.head, reserve.head + frameBytes);
  let at = 0;
  frame[at++] = MSGPACK_FIXMAP_7;
  at = put(frame, at, KEY_V);
  frame[at++] = PROTOCOL_VERSION; // positive fixint: versions stay below 128
  at = put(frame, at, KEY_T);
  at = put(frame, at, VALUE_CHUNK);
  at = put(frame, at, KEY_SEQ);
  at = writeUint64(frame, at, seq);
  at = put(frame, at, KEY_PATH);
  frame[at++] = MSGPACK_STR16;
  at = frame.writeUInt16BE(pathBytes.length, at);
  at = put(frame, at, pathBytes);
  at = put(frame, at, KEY_OFFSET);
  at = writeUint64(frame, at, offset);
  at = put(frame, at, KEY_CRC);
  frame[at++] = MSGPACK_UINT32;
  const crcAt = at;
  at += 4;
  at = put(frame, at, KEY_DATA);
  frame[at++] = MSGPACK_BIN32;
  at = frame.writeUInt32BE(dataBytes, at);
  return {
    frame,
    data: frame.subarray(at, at + dataBytes),
    setCrc: (crc) => void frame.writeUInt32BE(crc, crcAt),
    envelope,
  };
}
