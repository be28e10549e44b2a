/**
 * Authentication of a transfer's ack and ctl frames with the per-migration image key, so an
 * agent that may publish on `ferry.v1.xfer.>` but does not hold the key can neither fake
 * progress (an ack for frames the receiver never wrote) nor abort a transfer (a forged error or
 * abort). Data frames are sealed whole (chunk-cipher.ts); acks and ctl frames carry no secret,
 * so they stay readable and get a tag instead:
 *
 *   ack {v, t: 'ack', seq, mac}        ctl {v, t: 'error' | 'abort', code, message, mac}
 *
 * - mac = HMAC-SHA256(controlKey, "ferry-control-v1" || transferId || t || fields), every field
 *   length-prefixed so no two frames share an input. The type binds the direction (only the
 *   receiver acks and sends `error`, only the sender sends `abort`); the transfer id binds the
 *   frame to this transfer.
 * - controlKey = HKDF-SHA256(imageKey, info "ferry-control-v1"): the image key itself is used for
 *   AES-GCM only, never for two algorithms.
 * - Replaying a genuine ack of the same transfer is harmless: acks are cumulative and an older
 *   one is already ignored. A genuine error or abort ends the transfer, so there is no second to
 *   replay into.
 * - With a key, an unauthenticated frame (no mac, a wrong one, or not even a frame) is ignored,
 *   never acted on: failing the transfer on it would hand the denial of service back to anyone
 *   allowed on the subject.
 * - The direct path's offer {host, port, pump} is tagged the same way (type `offer`), so a sender
 *   connects only where the real receiver listens (a forged offer is refused and the sender uses
 *   NATS), and the token the sender opens that connection with is derived from the key
 *   (`directToken`), so it never crosses the bus: a reader of the bus cannot take the connection.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { assertImageKey } from './chunk-cipher';

/** HMAC-SHA256 output, in full. */
export const CONTROL_MAC_BYTES = 32;
const LABEL = 'ferry-control-v1';

/** The fields of an ack frame the tag covers. */
export interface AckFields {
  t: 'ack';
  seq: number;
}
/** The fields of an error or abort frame the tag covers. */
export interface CtlFields {
  t: 'error' | 'abort';
  code: string;
  message: string;
}
/** The fields of a direct-path offer the tag covers. */
export interface OfferFields {
  t: 'offer';
  host: string;
  port: number;
  pump: boolean;
}
/** A received control frame: `mac` absent when the peer sent none. */
export type ControlFrameFields = (AckFields | CtlFields | OfferFields) & { mac?: Uint8Array };

/** Bytes of the direct path's connect token (hex-encoded on the wire: twice as many digits). */
export const DIRECT_TOKEN_BYTES = 16;

/** The token a keyed sender opens the direct connection with: HKDF of the image key, bound to the transfer. */
export function directToken(imageKey: Uint8Array, transferId: string): string {
  assertImageKey(imageKey);
  return Buffer.from(hkdfSync('sha256', imageKey, Buffer.from(transferId), 'ferry-direct-token-v1', DIRECT_TOKEN_BYTES)).toString('hex');
}

function field(bytes: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([len, bytes]);
}

function seqBytes(seq: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(seq), 0);
  return b;
}

/** Tags and checks the ack and ctl frames of one transfer under one migration's key. */
export class ControlFrameAuthenticator {
  private readonly macKey: Buffer;
  private readonly prefix: Buffer;

  constructor(imageKey: Uint8Array, transferId: string) {
    assertImageKey(imageKey);
    this.macKey = Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), LABEL, CONTROL_MAC_BYTES));
    this.prefix = Buffer.concat([field(Buffer.from(LABEL)), field(Buffer.from(transferId))]);
  }

  /** The tag of `frame` (its `mac`, if any, is not covered). */
  tag(frame: AckFields | CtlFields | OfferFields): Buffer {
    const hmac = createHmac('sha256', this.macKey).update(this.prefix).update(field(Buffer.from(frame.t)));
    if (frame.t === 'ack') hmac.update(field(seqBytes(frame.seq)));
    else if (frame.t === 'offer') hmac.update(field(Buffer.from(frame.host))).update(field(seqBytes(frame.port))).update(field(Buffer.from([frame.pump ? 1 : 0])));
    else hmac.update(field(Buffer.from(frame.code))).update(field(Buffer.from(frame.message)));
    return hmac.digest();
  }

  /** `frame` with its tag in `mac`, ready to encode. */
  sign<F extends AckFields | CtlFields | OfferFields>(frame: F): F & { mac: Buffer } {
    return { ...frame, mac: this.tag(frame) };
  }

  /** True only if `frame.mac` is this transfer's tag of `frame` under this key (constant-time compare). */
  verify(frame: ControlFrameFields): boolean {
    const mac = frame.mac;
    if (!(mac instanceof Uint8Array) || mac.byteLength !== CONTROL_MAC_BYTES) return false;
    return timingSafeEqual(mac, this.tag(frame));
  }
}
