/**
 * Frames of the image transfer protocol. Every frame is a msgpack map carrying `v` (the protocol
 * version) and `t` (its type); each is checked against these strict schemas on receipt, so an
 * unknown field, a wrong type or an out-of-range number is INVALID_ARGUMENT, never a crash.
 *
 * Data subject (sender -> receiver), one global `seq` counting every frame from 0:
 *   file  {seq, path, mode, size, streamed?} opens a file; `streamed` (pumped path only): its body
 *                                            streams out of CRIU while the dump runs, so `size` is 0
 *                                            and the body's authenticated end frame ends it
 *   chunk {seq, path, offset, data, crc}     bytes at `offset` of the open file; `crc` is the running
 *                                            crc32 of the file's bytes from 0 through this chunk
 *   eof   {seq, path, crc, size?}            closes the file; crc32 of its whole content; `size`:
 *                                            a streamed file's length, known only now
 *   end   {seq, files, bytes}                the image is complete
 * Ack subject (receiver -> sender): ack {seq, mac?}, the highest contiguous seq processed.
 * Ctl subject (both ways): error {code, message, mac?} from the receiver, abort {code, message, mac?} from the sender.
 * With a per-migration key, `mac` authenticates acks and ctl frames (control-frame-auth.ts) and
 * data frames travel sealed (chunk-cipher.ts).
 * Direct subject (request/reply): direct {} from the sender; offer {host, port, token} or decline {}.
 *
 * One running crc32 per file replaces a crc per chunk plus a sha256 per file: a single pass over
 * the bytes on each side (sha256 cost the receiver as much CPU as everything else but the NATS
 * parser, see bench/README.md), and a lost, repeated or reordered chunk still breaks the chain.
 * It guards against accidents, not an attacker: authenticity is the transport's job (NATS
 * credentials/TLS, and the direct path's one-time token). With a migration key the frames are
 * sealed (AES-GCM, strictly in order), which covers accidents too: the sender then leaves every
 * crc 0 and the receiver checks none, one pass over the bytes fewer on each side.
 *
 * Direct path (TCP, sender -> receiver's offer): every frame is a 4-byte big-endian length and
 * the same msgpack frame; the sender's first frame is hello {token}; acks come back on the socket.
 *
 * Pumped direct path (file-pump.ts; both sides have a native pump and a key): the offer says
 * `pump: true`, the sender's hello asks for it, and the receiver answers go {} on the socket once
 * Node no longer reads it. From then on the connection carries only file bodies, each a sealed
 * stream of its own; file, eof (crc 0: the sealed stream authenticates every byte) and end
 * frames, acks and ctl frames travel over NATS as on the NATS path.
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from '@ferry/protocol';
import { imagePathProblem } from './image-path';

const Version = z.literal(PROTOCOL_VERSION);
const Seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const ByteCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const ImagePath = z.string().superRefine((name, ctx) => {
  const problem = imagePathProblem(name);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `file name ${problem}` });
});

export const FileFrame = z.strictObject({
  v: Version,
  t: z.literal('file'),
  seq: Seq,
  path: ImagePath,
  /** Permission bits only; set-id and sticky bits are never transferred. */
  mode: z.number().int().min(0).max(0o777),
  size: ByteCount,
  /**
   * The body's length is not known yet: it is read from CRIU's image streamer while the dump runs
   * (the pumped path only). `size` is then 0; the receiver bounds the body by its own limits and
   * the eof frame says how long it was.
   */
  streamed: z.literal(true).optional(),
});
export type FileFrame = z.infer<typeof FileFrame>;

export const ChunkFrame = z.strictObject({
  v: Version,
  t: z.literal('chunk'),
  seq: Seq,
  path: ImagePath,
  offset: ByteCount,
  /** msgpack bin; decodes as a Buffer viewing the received message, no copy. */
  data: z.instanceof(Uint8Array).refine((d) => d.byteLength > 0, 'a chunk carries at least one byte'),
  /** zlib.crc32 of the file's bytes [0, offset + data.length), i.e. chained from the previous chunk's crc. */
  crc: z.number().int().min(0).max(0xffff_ffff),
});
export type ChunkFrame = z.infer<typeof ChunkFrame>;

export const EofFrame = z.strictObject({
  v: Version,
  t: z.literal('eof'),
  seq: Seq,
  path: ImagePath,
  /** zlib.crc32 of the whole file (0 for an empty file). */
  crc: z.number().int().min(0).max(0xffff_ffff),
  /** A streamed file's length (its file frame could not say it); absent otherwise. */
  size: ByteCount.optional(),
});
export type EofFrame = z.infer<typeof EofFrame>;

export const EndFrame = z.strictObject({
  v: Version,
  t: z.literal('end'),
  seq: Seq,
  files: z.number().int().nonnegative(),
  bytes: ByteCount,
});
export type EndFrame = z.infer<typeof EndFrame>;

export const DataFrame = z.discriminatedUnion('t', [FileFrame, ChunkFrame, EofFrame, EndFrame]);
export type DataFrame = z.infer<typeof DataFrame>;

/** HMAC tag of an ack or ctl frame under the migration's key (control-frame-auth.ts); absent without a key. */
const Mac = z
  .instanceof(Uint8Array)
  .refine((m) => m.byteLength <= 64, 'a mac is at most 64 bytes')
  .optional();

export const AckFrame = z.strictObject({ v: Version, t: z.literal('ack'), seq: Seq, mac: Mac });
export type AckFrame = z.infer<typeof AckFrame>;

const CtlBody = {
  v: Version,
  code: z.string().max(64),
  message: z.string().max(64 * 1024),
  mac: Mac,
};
/** Receiver -> sender: the receiver failed; the sender fails with `code`. */
export const ErrorCtlFrame = z.strictObject({ ...CtlBody, t: z.literal('error') });
/** Sender -> receiver: the sender failed; the receiver fails too. */
export const AbortCtlFrame = z.strictObject({ ...CtlBody, t: z.literal('abort') });
export const CtlFrame = z.discriminatedUnion('t', [ErrorCtlFrame, AbortCtlFrame]);
export type CtlFrame = z.infer<typeof CtlFrame>;

const Token = z.string().regex(/^[0-9a-f]{32}$/, 'token is 32 lowercase hex digits');

/** Sender -> receiver on the direct subject: may I send over TCP? */
export const DirectRequestFrame = z.strictObject({ v: Version, t: z.literal('direct') });
/**
 * Receiver's answer: connect here (one connection, once). Without a key it names the `token` to
 * present; with one it carries none (both ends derive it, control-frame-auth.ts directToken) and
 * is tagged (`mac`), so a sender takes no offer from whoever else may answer on the subject.
 */
export const DirectOfferFrame = z.strictObject({
  v: Version,
  t: z.literal('offer'),
  host: z.string().min(1).max(64),
  port: z.number().int().min(1).max(65_535),
  token: Token.optional(),
  mac: Mac,
  /** The receiver can take file bodies through its native pump. */
  pump: z.boolean().optional(),
});
/** Receiver's answer when it has no direct endpoint: use NATS. */
export const DirectDeclineFrame = z.strictObject({ v: Version, t: z.literal('decline') });
export const DirectReplyFrame = z.discriminatedUnion('t', [DirectOfferFrame, DirectDeclineFrame]);
export type DirectReplyFrame = z.infer<typeof DirectReplyFrame>;
/** First frame on a direct connection. */
export const HelloFrame = z.strictObject({
  v: Version,
  t: z.literal('hello'),
  token: Token,
  /** The sender will pump file bodies (only after the receiver's go). */
  pump: z.boolean().optional(),
});
/** Receiver -> sender on a pumped connection: Node no longer reads it, the bodies may come. */
export const GoFrame = z.strictObject({ v: Version, t: z.literal('go') });

/** Room left in a NATS message for a chunk frame's fields around its data. */
export const FRAME_OVERHEAD_BYTES = 4096;
