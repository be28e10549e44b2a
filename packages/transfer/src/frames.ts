/**
 * Frames of the image transfer protocol. Every frame is a msgpack map carrying `v` (the protocol
 * version) and `t` (its type); each is checked against these strict schemas on receipt, so an
 * unknown field, a wrong type or an out-of-range number is INVALID_ARGUMENT, never a crash.
 *
 * Data subject (sender -> receiver), one global `seq` counting every frame from 0:
 *   file  {seq, path, mode, size}           opens a file
 *   chunk {seq, path, offset, data, crc}     bytes at `offset` of the open file, crc32 of `data`
 *   eof   {seq, path, sha256}                closes the file; sha256 (hex) of its whole content
 *   end   {seq, files, bytes}                the image is complete
 * Ack subject (receiver -> sender): ack {seq}, the highest contiguous seq processed.
 * Ctl subject (both ways): error {code, message} from the receiver, abort {code, message} from the sender.
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
  /** zlib.crc32 of `data`. */
  crc: z.number().int().min(0).max(0xffff_ffff),
});
export type ChunkFrame = z.infer<typeof ChunkFrame>;

export const EofFrame = z.strictObject({
  v: Version,
  t: z.literal('eof'),
  seq: Seq,
  path: ImagePath,
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'sha256 is 64 lowercase hex digits'),
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

export const AckFrame = z.strictObject({ v: Version, t: z.literal('ack'), seq: Seq });
export type AckFrame = z.infer<typeof AckFrame>;

const CtlBody = {
  v: Version,
  code: z.string().max(64),
  message: z.string().max(64 * 1024),
};
/** Receiver -> sender: the receiver failed; the sender fails with `code`. */
export const ErrorCtlFrame = z.strictObject({ ...CtlBody, t: z.literal('error') });
/** Sender -> receiver: the sender failed; the receiver fails too. */
export const AbortCtlFrame = z.strictObject({ ...CtlBody, t: z.literal('abort') });
export const CtlFrame = z.discriminatedUnion('t', [ErrorCtlFrame, AbortCtlFrame]);
export type CtlFrame = z.infer<typeof CtlFrame>;

/** Room left in a NATS message for a chunk frame's fields around its data. */
export const FRAME_OVERHEAD_BYTES = 4096;
