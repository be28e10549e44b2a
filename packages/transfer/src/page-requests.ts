/**
 * Post-copy page requests over NATS: the target's agent asks the source's agent for a run of a
 * task's memory pages that stayed on the source after the workload resumed on the target.
 *
 *   request {v, t: 'get', pid, vaddr, nr}
 *   reply   {v, t: 'pages', pid, vaddr, nr, nonce: bin(12), box: bin(ciphertext || tag)}  with a key
 *           {v, t: 'pages', pid, vaddr, nr, data: bin}                                    without
 *           {v, t: 'error', code, message}
 *
 * A reply may carry fewer pages than asked (the end of a run, or of what fits in one message);
 * the asker asks again for the rest, as CRIU's lazy-pages daemon does with its page server.
 *
 * - AES-256-GCM under pagesKey = HKDF-SHA256(imageKey, info "ferry-pages-v1"), so the image key
 *   itself serves one nonce scheme only (chunk-cipher.ts). Nonces are random per reply: replies are
 *   few (one per CRIU request, at most a few thousand per migration) and 96 random bits never meet.
 * - AAD = "ferry-pages-v1" || transferId || pid || vaddr || nr: a reply for another request, another
 *   transfer or sealed with another key does not open.
 * - Requests carry no secret and are not authenticated: answering one reveals only ciphertext,
 *   and who may publish on the subject at all is NATS's permissions' business.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from 'nats';
import { z } from 'zod';
import {
  decode,
  encode,
  ErrorBodySchema,
  ErrorCode,
  FerryError,
  parseMessage,
  PAGE_BYTES,
  PROTOCOL_VERSION,
  silentLogger,
  subjects,
  toFerryError,
  type ErrorBody,
  type Logger,
} from '@ferry/protocol';
import { assertImageKey } from './chunk-cipher';

const LABEL = 'ferry-pages-v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Room for a reply's other fields in a NATS message. */
const REPLY_OVERHEAD_BYTES = 4096;
/** The asker's default patience for one reply. */
export const DEFAULT_PAGE_REQUEST_TIMEOUT_MS = 10_000;

const Pid = z.number().int().positive().max(0x7fff_ffff);
const Vaddr = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const PageCount = z.number().int().positive().max(1 << 20);

export const PagesRequest = z.strictObject({ v: z.literal(PROTOCOL_VERSION), t: z.literal('get'), pid: Pid, vaddr: Vaddr, nr: PageCount });
export type PagesRequest = z.infer<typeof PagesRequest>;

const PagesReply = z.discriminatedUnion('t', [
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    t: z.literal('pages'),
    pid: Pid,
    vaddr: Vaddr,
    nr: PageCount,
    nonce: z.instanceof(Uint8Array).optional(),
    box: z.instanceof(Uint8Array).optional(),
    data: z.instanceof(Uint8Array).optional(),
  }),
  z.object({ v: z.literal(PROTOCOL_VERSION), t: z.literal('error') }).merge(ErrorBodySchema),
]);

/** Pages found by the source: `nr` pages from `vaddr`, at most the number asked for. */
export interface PageRun {
  vaddr: number;
  nr: number;
  data: Buffer;
}

/** The source's side: the bytes of up to `nr` pages from `vaddr` of task `pid`; NOT_FOUND when it has none there. */
export type PageLookup = (pid: number, vaddr: number, nr: number) => Promise<PageRun>;

/** The key replies are sealed with, derived from the migration's image key (once per migration, not per request). */
export function pageRequestKey(imageKey: Uint8Array): Buffer {
  assertImageKey(imageKey);
  return Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), LABEL, 32));
}

function aad(transferId: string, pid: number, vaddr: number, nr: number): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32BE(pid, 0);
  fixed.writeUInt32BE(Math.floor(vaddr / 0x1_0000_0000), 4);
  fixed.writeUInt32BE(vaddr % 0x1_0000_0000, 8);
  fixed.writeUInt32BE(nr, 12);
  return Buffer.concat([Buffer.from(LABEL), Buffer.from(transferId), fixed]);
}

const MSGPACK_BIN32 = 0xc6;

/** encode({...head, nonce, box: body || tag}) with one copy of the body. */
function sealedReply(head: Record<string, unknown>, nonce: Buffer, body: Buffer, tag: Buffer): Buffer {
  // A map of the head's fields + nonce + box: encode it with a placeholder box, then splice the real one in.
  const withoutBox = Buffer.from(encode({ ...head, nonce, box: new Uint8Array(0) }));
  // The placeholder is the last 5 bytes msgpackr wrote for the empty bin ("box" key, then c4 00).
  const prefix = withoutBox.subarray(0, withoutBox.length - 2);
  const len = Buffer.allocUnsafe(5);
  len[0] = MSGPACK_BIN32;
  len.writeUInt32BE(body.length + tag.length, 1);
  return Buffer.concat([prefix, len, body, tag]);
}

/** Most pages one reply can carry through a server with this max_payload. */
export function maxPagesPerReply(maxPayloadBytes: number): number {
  return Math.max(1, Math.floor((maxPayloadBytes - REPLY_OVERHEAD_BYTES - TAG_BYTES) / PAGE_BYTES));
}

export interface PageResponder {
  close(): void;
  /** Requests answered with pages, and the page bytes sent. */
  stats(): { requests: number; bytes: number };
}

/**
 * Source side: answers the page requests of transfer `transferId` from `lookup` until closed.
 * Every failure becomes an error reply; nothing a requester sends can throw here.
 */
export function servePageRequests(
  nc: NatsConnection,
  transferId: string,
  lookup: PageLookup,
  opts: { imageKey?: Uint8Array | null; logger?: Logger } = {},
): PageResponder {
  const key = opts.imageKey ? pageRequestKey(opts.imageKey) : null;
  const log = opts.logger ?? silentLogger;
  const maxPages = maxPagesPerReply(nc.info?.max_payload ?? 1024 * 1024);
  let requests = 0;
  let bytes = 0;
  const answer = async (data: Uint8Array): Promise<Uint8Array> => {
    try {
      const req = parseMessage(PagesRequest, decode(data));
      const run = await lookup(req.pid, req.vaddr, Math.min(req.nr, maxPages));
      if (run.vaddr !== req.vaddr || run.nr < 1 || run.nr > req.nr || run.data.byteLength !== run.nr * PAGE_BYTES) {
        throw new FerryError(ErrorCode.INTERNAL, `page lookup returned ${run.nr} pages at ${run.vaddr} for ${req.nr} at ${req.vaddr}`);
      }
      requests += 1;
      bytes += run.data.byteLength;
      const head = { v: PROTOCOL_VERSION, t: 'pages' as const, pid: req.pid, vaddr: run.vaddr, nr: run.nr };
      if (key === null) return encode({ ...head, data: run.data });
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(transferId, req.pid, run.vaddr, run.nr));
      const body = cipher.update(run.data);
      cipher.final();
      // The map laid out by hand around the ciphertext, so it is copied once (not by the encoder too).
      return sealedReply(head, nonce, body, cipher.getAuthTag());
    } catch (err) {
      const fe = toFerryError(err, ErrorCode.INTERNAL);
      log.warn({ transferId, code: fe.code, err: fe.message }, 'page request refused');
      return encode({ v: PROTOCOL_VERSION, t: 'error', ...fe.toBody() });
    }
  };
  const sub: Subscription = nc.subscribe(subjects.xferPages(transferId), {
    callback: (err, msg) => {
      if (err) {
        log.warn({ transferId, err: err.message }, 'page request subscription failed');
        return;
      }
      void answer(msg.data).then((reply) => msg.respond(reply));
    },
  });
  return {
    close: () => sub.unsubscribe(),
    stats: () => ({ requests, bytes }),
  };
}

/**
 * Target side: up to `nr` pages of task `pid` from `vaddr`, from the source. Fewer when the
 * source's run ends earlier. UNAVAILABLE or DEADLINE_EXCEEDED when the source does not answer,
 * TRANSFER_FAILED for a reply that does not open, the source's own error otherwise.
 */
export async function requestPages(
  nc: NatsConnection,
  transferId: string,
  want: { pid: number; vaddr: number; nr: number },
  opts: { imageKey?: Uint8Array | null; timeoutMs?: number; key?: Buffer } = {},
): Promise<PageRun> {
  const key = opts.key ?? (opts.imageKey ? pageRequestKey(opts.imageKey) : null);
  const nr = Math.min(want.nr, maxPagesPerReply(nc.info?.max_payload ?? 1024 * 1024));
  let raw: Uint8Array;
  try {
    const msg = await nc.request(subjects.xferPages(transferId), encode({ v: PROTOCOL_VERSION, t: 'get', pid: want.pid, vaddr: want.vaddr, nr }), {
      timeout: opts.timeoutMs ?? DEFAULT_PAGE_REQUEST_TIMEOUT_MS,
    });
    raw = msg.data;
  } catch (err) {
    const fe = toFerryError(err, ErrorCode.UNAVAILABLE);
    throw new FerryError(fe.code, `source did not send pages at ${want.vaddr.toString(16)} of task ${want.pid}: ${fe.message}`, { cause: err });
  }
  const reply = parseMessage(PagesReply, decode(raw, Number.MAX_SAFE_INTEGER));
  if (reply.t === 'error') {
    const remote = FerryError.fromBody(reply as ErrorBody);
    throw new FerryError(remote.code, `source refused pages at ${want.vaddr.toString(16)} of task ${want.pid}: ${remote.message}`, { cause: remote });
  }
  if (reply.pid !== want.pid || reply.vaddr !== want.vaddr || reply.nr > nr) {
    throw new FerryError(ErrorCode.TRANSFER_FAILED, `source answered with ${reply.nr} pages at ${reply.vaddr} of task ${reply.pid} for ${nr} at ${want.vaddr} of ${want.pid}`);
  }
  let data: Buffer;
  if (key !== null) {
    if (!reply.nonce || !reply.box || reply.nonce.byteLength !== NONCE_BYTES || reply.box.byteLength < TAG_BYTES) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, 'page reply is not sealed with this migration key');
    }
    const box = Buffer.from(reply.box.buffer, reply.box.byteOffset, reply.box.byteLength);
    const decipher = createDecipheriv('aes-256-gcm', key, reply.nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad(transferId, reply.pid, reply.vaddr, reply.nr));
    decipher.setAuthTag(box.subarray(box.length - TAG_BYTES));
    try {
      data = decipher.update(box.subarray(0, box.length - TAG_BYTES));
      // GCM releases nothing at final(); it throws unless the tag matches, before `data` is used.
      decipher.final();
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `page reply at ${want.vaddr.toString(16)} failed authentication`, { cause: err });
    }
  } else {
    if (!reply.data) throw new FerryError(ErrorCode.TRANSFER_FAILED, 'page reply without data');
    data = Buffer.from(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
  }
  if (data.byteLength !== reply.nr * PAGE_BYTES) {
    throw new FerryError(ErrorCode.TRANSFER_FAILED, `page reply holds ${data.byteLength} bytes for ${reply.nr} pages`);
  }
  return { vaddr: reply.vaddr, nr: reply.nr, data };
}
