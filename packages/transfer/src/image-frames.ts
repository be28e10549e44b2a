/**
 * The sender's frame source: reads an image's files in large positional reads and yields the
 * encoded frames in protocol order, computing each file's running crc32 on the way.
 */
import { constants, read } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { encode, ErrorCode, FerryError, PROTOCOL_VERSION } from '@ferry/protocol';
import { allocChunkFrame, type ChunkBufferPool, type FrameReserve } from './chunk-frame-writer';
import { readFully } from './file-io';
import type { ImageFile } from './list-image-files';

const readFd = promisify(read);

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

/** Where a frame sequence stands: the next seq, and the files and bytes sent so far (the end frame carries them). */
interface FrameCursor {
  seq: number;
  files: number;
  bytes: number;
}

/** How chunks are read: size, crc or not, room for an envelope, buffers from a pool. */
interface ChunkLayout {
  chunkBytes: number;
  /** false: the frames travel sealed (AES-GCM authenticates every byte in order): every crc 0, one pass less. */
  withCrc: boolean;
  reserve?: FrameReserve;
  pool?: ChunkBufferPool;
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
  const cursor: FrameCursor = { seq: 0, files: 0, bytes: 0 };
  yield* listedFileFrames(files, { chunkBytes, withCrc, reserve, pool }, cursor);
  yield endFrame(cursor);
}

/**
 * The frames of live files, streamed as CRIU writes them (the transfer is not pumped): for each, a
 * file frame marked streamed (size 0), chunks read from its pipe as they fill, and an eof frame
 * with the size it turned out to have (acknowledged: its onDone). Then the files `listFiles` gives
 * once `live` has ended (the dump is over), as imageFrames does, then end. So the dump and the
 * transfer overlap on NATS too, and the pages are neither written to the source's disk nor read back.
 */
export async function* streamedImageFrames(
  live: AsyncIterable<LiveImageFile>,
  listFiles: () => Promise<readonly ImageFile[]>,
  layout: ChunkLayout,
): AsyncGenerator<EncodedFrame> {
  const v = PROTOCOL_VERSION;
  const cursor: FrameCursor = { seq: 0, files: 0, bytes: 0 };
  for await (const file of live) {
    const { path, mode } = file;
    yield { seq: cursor.seq, kind: 'file', payloadBytes: 0, bytes: encode({ v, t: 'file', seq: cursor.seq, path, mode, size: 0, streamed: true }) };
    cursor.seq += 1;
    let crc = 0;
    let offset = 0;
    for (let ended = false; !ended; ) {
      let chunk = allocChunkFrame(cursor.seq, path, offset, layout.chunkBytes, layout.reserve, layout.pool);
      const read = await readPipeFully(file.fd, chunk.data);
      ended = read < chunk.data.byteLength;
      if (read === 0) {
        layout.pool?.give(chunk.envelope);
        break;
      }
      if (ended) {
        // The last, short chunk: laid out again at its size (a chunk frame's data ends the frame).
        const short = allocChunkFrame(cursor.seq, path, offset, read, layout.reserve, layout.pool);
        chunk.data.copy(short.data, 0, 0, read);
        layout.pool?.give(chunk.envelope);
        chunk = short;
      }
      if (layout.withCrc) {
        crc = crc32(chunk.data, crc);
        chunk.setCrc(crc);
      }
      yield { seq: cursor.seq, kind: 'chunk', payloadBytes: read, bytes: chunk.frame, envelope: chunk.envelope };
      cursor.seq += 1;
      offset += read;
    }
    cursor.files += 1;
    cursor.bytes += offset;
    yield {
      seq: cursor.seq,
      kind: 'eof',
      payloadBytes: 0,
      bytes: encode({ v, t: 'eof', seq: cursor.seq, path, crc, size: offset }),
      ...(file.onDone ? { onAcked: file.onDone } : {}),
    };
    cursor.seq += 1;
  }
  yield* listedFileFrames(await listFiles(), layout, cursor);
  yield endFrame(cursor);
}

/** Fills `buffer` from a blocking pipe; fewer bytes only at its end (the writer closed it). */
async function readPipeFully(fd: number, buffer: Buffer): Promise<number> {
  let filled = 0;
  while (filled < buffer.byteLength) {
    // A blocking read, on libuv's pool: it returns as soon as CRIU wrote something.
    const { bytesRead } = await readFd(fd, buffer, filled, buffer.byteLength - filled, null);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

function endFrame(cursor: FrameCursor): EncodedFrame {
  const { seq, files, bytes } = cursor;
  return { seq, kind: 'end', payloadBytes: 0, bytes: encode({ v: PROTOCOL_VERSION, t: 'end', seq, files, bytes }) };
}

/** file, chunk..., eof for every listed file, read from the directory, continuing `cursor`. */
async function* listedFileFrames(files: readonly ImageFile[], layout: ChunkLayout, cursor: FrameCursor): AsyncGenerator<EncodedFrame> {
  const v = PROTOCOL_VERSION;
  const { chunkBytes, withCrc, reserve, pool } = layout;
  for (const file of files) {
    const { path, mode, size } = file;
    let seq = cursor.seq;
    yield { seq, kind: 'file', payloadBytes: 0, bytes: encode({ v, t: 'file', seq, path, mode, size }) };
    seq += 1;
    let crc = 0;
    const fh = await openImageFile(file);
    try {
      for (let offset = 0; offset < size; ) {
        // A fresh frame per chunk (or one back from the pool: its frame acknowledged), the file
        // read straight into its payload area.
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
      }
      const { size: sizeNow } = await fh.stat();
      if (sizeNow !== size) {
        throw new FerryError(ErrorCode.TRANSFER_FAILED, `${file.absolutePath} changed size while being sent (${size} -> ${sizeNow} bytes)`);
      }
    } finally {
      await fh.close();
    }
    yield { seq, kind: 'eof', payloadBytes: 0, bytes: encode({ v, t: 'eof', seq, path, crc }) };
    cursor.seq = seq + 1;
    cursor.files += 1;
    cursor.bytes += size;
  }
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
