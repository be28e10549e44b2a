/**
 * End-to-end encryption and authentication of an image's data frames between the two agents of
 * a migration, with the per-migration key the coordinator hands both of them over the
 * (authenticated) control plane. nats-server, other NATS clients and anyone on the direct TCP
 * path see only ciphertext, and a frame not sealed with the key is rejected.
 *
 * Every data frame (file, chunk, eof, end) is sealed whole, at the frame level, so the NATS path
 * and the direct path carry the same bytes and neither needs its own crypto:
 *
 *   sealed {v, t: 'sealed', seq, salt: bin(4), box: bin(ciphertext || 16-byte tag)}
 *
 * - AES-256-GCM (node:crypto; AES-NI makes it far cheaper than the msgpack + NATS path per byte).
 * - nonce = salt (4 random bytes per sendImage call) || seq (8 bytes, big-endian). seq counts
 *   every frame of a transfer once, so a nonce never repeats under one key; the salt keeps it so
 *   even if a sender were ever started twice with the same key.
 * - AAD = "ferry-image-v1" || transferId || seq: a frame from another transfer, or moved to
 *   another position, fails authentication.
 * - The plaintext is the ordinary frame, whose own seq must equal the envelope's and whose file
 *   name and offset the receiver checks against its state; being inside the authenticated
 *   plaintext, they are bound to the key, transfer and position as well as an AAD would bind them.
 * - The receiver opens frames strictly in order (seq = the next one it expects), so a replayed,
 *   dropped or reordered frame fails the transfer with TRANSFER_FAILED, like a forged one.
 * Acks and ctl frames are not sealed (they carry no image bytes) but authenticated with a key
 * derived from the same one: see control-frame-auth.ts.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { decode, ErrorCode, FerryError, IMAGE_KEY_BYTES, PROTOCOL_VERSION } from '@ferry/protocol';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';

const ALGORITHM = 'aes-256-gcm';
const SALT_BYTES = 4;
const TAG_BYTES = 16;
const AAD_LABEL = Buffer.from('ferry-image-v1');
const UINT32_LIMIT = 0x1_0000_0000;

const MSGPACK_FIXMAP_5 = 0x85;
const MSGPACK_UINT64 = 0xcf;
const MSGPACK_BIN8 = 0xc4;
const MSGPACK_BIN32 = 0xc6;

function fixstr(text: string): Buffer {
  const bytes = Buffer.from(text);
  return Buffer.concat([Buffer.from([0xa0 | bytes.length]), bytes]);
}

const SealedFrame = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  t: z.literal('sealed'),
  seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  salt: z.instanceof(Uint8Array).refine((s) => s.byteLength === SALT_BYTES, `salt is ${SALT_BYTES} bytes`),
  box: z.instanceof(Uint8Array).refine((b) => b.byteLength > TAG_BYTES, 'box holds ciphertext and tag'),
});

/** INVALID_ARGUMENT unless `key` is a usable image key. */
export function assertImageKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.byteLength !== IMAGE_KEY_BYTES) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `an image key is ${IMAGE_KEY_BYTES} bytes`);
  }
}

/**
 * AES-256-GCM over `data` in place (the agent passes @ferry/native's aeadInPlace): seal writes the
 * tag into `tag`; open returns false for a bad tag. Without it node:crypto does the work, at the
 * cost of a fresh output buffer per frame, which on the NATS path cost the receiver as much CPU as
 * the cipher (bench/README.md).
 */
export type InPlaceAead = (mode: 'seal' | 'open', key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, data: Uint8Array, tag: Uint8Array) => boolean;

function writeSeq(buf: Buffer, at: number, seq: number): void {
  buf.writeUInt32BE(Math.floor(seq / UINT32_LIMIT), at);
  buf.writeUInt32BE(seq % UINT32_LIMIT, at + 4);
}

abstract class ChunkCipherBase {
  protected readonly key: Buffer;
  private readonly aadPrefix: Buffer;

  constructor(
    key: Uint8Array,
    transferId: string,
    protected readonly inPlace: InPlaceAead | null = null,
  ) {
    assertImageKey(key);
    // A private copy: the caller's buffer may be reused or zeroed.
    this.key = Buffer.from(key);
    this.aadPrefix = Buffer.concat([AAD_LABEL, Buffer.from(transferId)]);
  }

  protected nonce(salt: Uint8Array, seq: number): Buffer {
    const nonce = Buffer.alloc(SALT_BYTES + 8);
    nonce.set(salt, 0);
    writeSeq(nonce, SALT_BYTES, seq);
    return nonce;
  }

  protected aad(seq: number): Buffer {
    const aad = Buffer.alloc(this.aadPrefix.length + 8);
    this.aadPrefix.copy(aad, 0);
    writeSeq(aad, this.aadPrefix.length, seq);
    return aad;
  }
}

const ENVELOPE_KEYS = {
  v: fixstr('v'),
  t: fixstr('t'),
  sealed: fixstr('sealed'),
  seq: fixstr('seq'),
  salt: fixstr('salt'),
  box: fixstr('box'),
};
/** Bytes of an envelope before its box's contents: map, v, t, seq (uint64), salt (bin8), box's bin32 header. */
export const SEALED_HEAD_BYTES =
  1 + ENVELOPE_KEYS.v.length + 1 + ENVELOPE_KEYS.t.length + ENVELOPE_KEYS.sealed.length + ENVELOPE_KEYS.seq.length + 9 +
  ENVELOPE_KEYS.salt.length + 2 + SALT_BYTES + ENVELOPE_KEYS.box.length + 5;
/** Bytes of an envelope after the ciphertext: the GCM tag. */
export const SEALED_TAIL_BYTES = TAG_BYTES;

/** The sender's half: seals each encoded data frame before it goes out. */
export class FrameSealer extends ChunkCipherBase {
  private readonly salt = randomBytes(SALT_BYTES);

  /** Whether sealReserved() can be used (it needs the in-place AES-GCM). */
  get sealsInPlace(): boolean {
    return this.inPlace !== null;
  }

  /** The sealed envelope of frame `seq` (msgpack, laid out by hand: one copy of the ciphertext). */
  seal(seq: number, frame: Uint8Array): Buffer {
    let body: Uint8Array;
    let tail: Uint8Array = Buffer.alloc(0);
    let tag: Uint8Array;
    if (this.inPlace !== null) {
      // The plaintext frame is ours (a fresh buffer per frame): sealed where it lies.
      tag = Buffer.alloc(TAG_BYTES);
      this.inPlace('seal', this.key, this.nonce(this.salt, seq), this.aad(seq), frame, tag);
      body = frame;
    } else {
      const cipher = createCipheriv(ALGORITHM, this.key, this.nonce(this.salt, seq), { authTagLength: TAG_BYTES });
      cipher.setAAD(this.aad(seq));
      body = cipher.update(frame);
      tail = cipher.final();
      tag = cipher.getAuthTag();
    }
    const boxBytes = body.length + tail.length + tag.length;
    const out = Buffer.allocUnsafe(SEALED_HEAD_BYTES + boxBytes);
    let at = this.writeHead(out, seq, boxBytes);
    out.set(body, at);
    at += body.byteLength;
    out.set(tail, at);
    at += tail.byteLength;
    out.set(tag, at);
    return out;
  }

  /**
   * Seals the frame that lies in `envelope` between SEALED_HEAD_BYTES and SEALED_TAIL_BYTES left
   * free for it (allocChunkFrame's `reserve`), writing the envelope around it: no copy of the
   * frame at all. Needs the in-place AES-GCM (sealsInPlace). Returns `envelope`, ready to send.
   * Profiled on a 512 MiB transfer over NATS: seal()'s copy was 7% of the sender's time, and as
   * much again in the garbage collector for the second 4 MiB buffer per frame.
   */
  sealReserved(seq: number, envelope: Buffer): Buffer {
    if (this.inPlace === null) throw new FerryError(ErrorCode.INTERNAL, 'sealReserved needs the in-place AES-GCM');
    const frameBytes = envelope.byteLength - SEALED_HEAD_BYTES - SEALED_TAIL_BYTES;
    if (frameBytes <= 0) throw new FerryError(ErrorCode.INTERNAL, 'an envelope with no frame in it');
    const frame = envelope.subarray(SEALED_HEAD_BYTES, SEALED_HEAD_BYTES + frameBytes);
    const tag = envelope.subarray(SEALED_HEAD_BYTES + frameBytes);
    this.inPlace('seal', this.key, this.nonce(this.salt, seq), this.aad(seq), frame, tag);
    this.writeHead(envelope, seq, frameBytes + TAG_BYTES);
    return envelope;
  }

  /** Writes the envelope's msgpack up to its box's contents into `out`; returns where they start. */
  private writeHead(out: Buffer, seq: number, boxBytes: number): number {
    const h = ENVELOPE_KEYS;
    let at = 0;
    out[at++] = MSGPACK_FIXMAP_5;
    at += h.v.copy(out, at);
    out[at++] = PROTOCOL_VERSION;
    at += h.t.copy(out, at);
    at += h.sealed.copy(out, at);
    at += h.seq.copy(out, at);
    out[at++] = MSGPACK_UINT64;
    writeSeq(out, at, seq);
    at += 8;
    at += h.salt.copy(out, at);
    out[at++] = MSGPACK_BIN8;
    out[at++] = SALT_BYTES;
    at += this.salt.copy(out, at);
    at += h.box.copy(out, at);
    out[at++] = MSGPACK_BIN32;
    return out.writeUInt32BE(boxBytes, at);
  }
}

/** The receiver's half: opens each arriving envelope, strictly in sequence. */
export class FrameOpener extends ChunkCipherBase {
  /**
   * The plaintext frame of `bytes`, which must be the sealed frame `expectedSeq` of this
   * transfer under this key. TRANSFER_FAILED for anything else (forged, tampered, replayed,
   * reordered, from another transfer, or not sealed at all).
   */
  open(bytes: Uint8Array, expectedSeq: number, maxBytes: number): Uint8Array {
    let envelope: z.infer<typeof SealedFrame>;
    try {
      const parsed = SealedFrame.safeParse(decode(bytes, maxBytes));
      if (!parsed.success) throw new Error(parsed.error.issues[0]?.message ?? 'not a sealed frame');
      envelope = parsed.data;
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `rejected an image frame that is not sealed with this migration's key: ${(err as Error).message}`, { cause: err });
    }
    if (envelope.seq !== expectedSeq) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `sealed frame ${envelope.seq} where ${expectedSeq} was expected: replayed, lost or reordered`);
    }
    const box = envelope.box;
    if (this.inPlace !== null) {
      // The envelope is a view into this message, which only this receiver's subscription sees
      // (one per transfer and connection): opened where it lies, no copy.
      const body = box.subarray(0, box.byteLength - TAG_BYTES);
      if (!this.inPlace('open', this.key, this.nonce(envelope.salt, envelope.seq), this.aad(envelope.seq), body, box.subarray(box.byteLength - TAG_BYTES))) {
        throw new FerryError(ErrorCode.TRANSFER_FAILED, `image frame ${envelope.seq} failed authentication: forged, tampered with, or sealed with another key`);
      }
      return body;
    }
    const decipher = createDecipheriv(ALGORITHM, this.key, this.nonce(envelope.salt, envelope.seq), { authTagLength: TAG_BYTES });
    decipher.setAAD(this.aad(envelope.seq));
    decipher.setAuthTag(box.subarray(box.byteLength - TAG_BYTES));
    const body = decipher.update(box.subarray(0, box.byteLength - TAG_BYTES));
    try {
      // Throws unless the tag matches: nothing of `body` is used before this.
      const tail = decipher.final();
      return tail.length === 0 ? body : Buffer.concat([body, tail]);
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `image frame ${envelope.seq} failed authentication: forged, tampered with, or sealed with another key`, { cause: err });
    }
  }
}
