/**
 * The sender's frame source: reads an image's files in large positional reads and yields the
 * encoded frames in protocol order, computing each file's running crc32 on the way.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { encode, ErrorCode, FerryError, PROTOCOL_VERSION } from '@ferry/protocol';
import { allocChunkFrame, type ChunkBufferPool, type FrameReserve } from './chunk-frame-writer';
import { readFully } from './file-io';
import type { ImageFile } from './list-image-files';

export interface EncodedFrame {
  seq: number;
  kind: 'file' | 'chunk' | 'eof' | 'end';
  /** File bytes the frame carries (chunks only). */
  payloadBytes: number;
  bytes: Uint8Array;
  /** Chunks: the whole buffer `bytes` lies in (with room for its envelope if read with a reserve). */
  envelope?: Buffer;
  /** Called once the receiver has acknowledged this frame (a live file's eof: LiveImageFile.onDone). */
  onAcked?: () => void;
}

/** Opens a listed image file for reading; TRANSFER_FAILED if it cannot be. */
export async function openImageFile(file: ImageFile): Promise<FileHandle> {
  // O_NOFOLLOW: the listing saw a regular file; refuse it if it was swapped for a symlink since.
  return open(file.absolutePath, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: Error) => {
    throw new FerryError(ErrorCode.TRANSFER_FAILED, `cannot open ${file.absolutePath}: ${err.message}`, { cause: err });
  });
}

/**
 * Yields file, chunk..., eof for every file, then end. `withCrc` false (the frames travel sealed:
 * AES-GCM already authenticates every byte in order) leaves every crc 0 and skips a pass over the data.
 * With `reserve`, each chunk is read into a buffer with that room around it, for its envelope;
 * with `pool`, into a buffer from it (the caller gives each chunk's `envelope` back once acknowledged).
 */
export async function* imageFrames(
  files: readonly ImageFile[],
  chunkBytes: number,
  withCrc = true,
  reserve?: FrameReserve,
  pool?: ChunkBufferPool,
): AsyncGenerator<EncodedFrame> {
  const v = PROTOCOL_VERSION;
  let seq = 0;
  let totalBytes = 0;
  for (const file of files) {
    const { path, mode, size } = file;
    yield { seq, kind: 'file', payloadBytes: 0, bytes: encode({ v, t: 'file', seq, path, mode, size }) };
    seq += 1;
    let crc = 0;
    const fh = await openImageFile(file);
    try {
      for (let offset = 0; offset < size; ) {
        // A fresh frame per chunk, the file read straight into its payload area: it is handed
        // to NATS, which may still hold it after the next read starts (read-ahead).
        const { frame, data, setCrc, envelope } = allocChunkFrame(seq, path, offset, Math.min(chunkBytes, size - offset), reserve, pool);
        const read = await readFully(fh, data, offset);
        if (read < data.byteLength) {
          throw new FerryError(ErrorCode.TRANSFER_FAILED, `${file.absolutePath} shrank while being sent (${offset + read} of ${size} bytes)`);
        }
        if (withCrc) {
          crc = crc32(data, crc);
          setCrc(crc);
        }
        yield { seq, kind: 'chunk', payloadBytes: data.byteLength, bytes: frame, envelope };
        seq += 1;
        offset += data.byteLength;
        totalBytes += data.byteLength;
      }
      const { size: sizeNow } = await fh.stat();
      if (sizeNow !== size) {
        throw new FerryError(ErrorCode.TRANSFER_FAILED, `${file.absolutePath} changed size while being sent (${size} -> ${sizeNow} bytes)`);
      }
    } finally {
      await fh.close();
    }
    yield { seq, kind: 'eof', payloadBytes: 0, bytes: encode({ v, t: 'eof', seq, path, crc }) };
    seq += 1;
  }
  yield { seq, kind: 'end', payloadBytes: 0, bytes: encode({ v, t: 'end', seq, files: files.length, bytes: totalBytes }) };
}

/** A file body for the pump: not a frame, it crosses the direct connection as a sealed stream. */
export interface BodyStep {
  kind: 'body';
  /** Seq of the file frame that announced it (its nonce prefix). */
  fileSeq: number;
  file: ImageFile;
}

/**
 * An image file still being written while it is sent: CRIU's image streamer (`criu dump --stream`)
 * hands the agent a pipe per file, and the large ones (memory pages) go on the wire as CRIU
 * writes them, so the dump and the transfer overlap and the pages never touch the source's disk.
 */
export interface LiveImageFile {
  /** Name under the image root, as the listing would give it. */
  path: string;
  /** Permission bits the file gets on the receiver. */
  mode: number;
  /** A blocking descriptor (a pipe's read end) whose end of file ends the file. Its owner closes it once the sender asks for the next file. */
  fd: number;
  /**
   * Called once the receiver has the file whole (its eof frame acknowledged: it was written, or
   * taken by the receiver's sink), or, where the transfer is not pumped, once it is written into
   * the sender's directory to be sent with the rest.
   */
  onDone?: () => void;
}

/** A live file's body for the pump; the sender sets `sentBytes` once it is through (the eof frame carries it). */
export interface LiveBodyStep {
  kind: 'live';
  /** Seq of the file frame that announced it (its nonce prefix). */
  fileSeq: number;
  file: LiveImageFile;
  sentBytes: number;
}

/**
 * The pumped path's steps: first the live files as they come (file frame marked streamed, body,
 * eof with the size the body turned out to have), then file, body, eof (crc 0: the sealed body
 * authenticates every byte) for every listed file, then end. `listFiles` runs once `live` has
 * ended (the dump is over and its directory complete). No file is read here; the pump reads it.
 */
export async function* pumpedImageFrames(
  listFiles: () => Promise<readonly ImageFile[]>,
  live?: AsyncIterable<LiveImageFile>,
): AsyncGenerator<EncodedFrame | BodyStep | LiveBodyStep> {
  const v = PROTOCOL_VERSION;
  let seq = 0;
  let files = 0;
  let totalBytes = 0;
  for await (const file of live ?? []) {
    const { path, mode } = file;
    const fileSeq = seq;
    yield { seq, kind: 'file', payloadBytes: 0, bytes: encode({ v, t: 'file', seq, path, mode, size: 0, streamed: true }) };
    seq += 1;
    const step: LiveBodyStep = { kind: 'live', fileSeq, file, sentBytes: -1 };
    yield step;
    if (step.sentBytes < 0) throw new FerryError(ErrorCode.INTERNAL, `live body of ${path} was not sent`);
    totalBytes += step.sentBytes;
    files += 1;
    yield { seq, kind: 'eof', payloadBytes: 0, bytes: encode({ v, t: 'eof', seq, path, crc: 0, size: step.sentBytes }), ...(file.onDone ? { onAcked: file.onDone } : {}) };
    seq += 1;
  }
  for (const file of await listFiles()) {
    const { path, mode, size } = file;
    const fileSeq = seq;
    yield { seq, kind: 'file', payloadBytes: 0, bytes: encode({ v, t: 'file', seq, path, mode, size }) };
    seq += 1;
    yield { kind: 'body', fileSeq, file };
    totalBytes += size;
    files += 1;
    yield { seq, kind: 'eof', payloadBytes: 0, bytes: encode({ v, t: 'eof', seq, path, crc: 0 }) };
    seq += 1;
  }
  yield { seq, kind: 'end', payloadBytes: 0, bytes: encode({ v, t: 'end', seq, files, bytes: totalBytes }) };
}
