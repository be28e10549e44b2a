/**
 * One file being received: created exclusively inside the image directory, written strictly in
 * order at the offsets the chunks name, and verified (size, running crc32) before it is closed.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, relative, sep } from 'node:path';
import { crc32 } from 'node:zlib';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { writeFully } from './file-io';
import type { FileFrame } from './frames';
import { resolveImagePath } from './image-path';

/**
 * Makes the directories leading to `fullPath` one segment at a time. mkdir(recursive) would
 * follow a symlink met on the way; here every segment must be a real directory we can see
 * with lstat, so a write can never be redirected outside `root`.
 */
async function makeParentDirs(root: string, fullPath: string, known: Set<string>): Promise<void> {
  const parent = dirname(fullPath);
  if (parent === root || known.has(parent)) return;
  let current = root;
  for (const segment of relative(root, parent).split(sep)) {
    current = `${current}${sep}${segment}`;
    if (known.has(current)) continue;
    try {
      await mkdir(current, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const st = await lstat(current);
    if (!st.isDirectory()) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${current} exists and is not a directory`);
    }
    known.add(current);
  }
}

/**
 * Where a streamed file's body goes instead of a file in the image directory (the receiver's
 * `openSink`): a descriptor the pump writes into, e.g. a pipe to `tar --extract`, so the body is
 * consumed while it arrives. `finish` ends it and resolves once its consumer has taken all of it
 * whole; `abort` stops it after a failure.
 */
export interface FileSink {
  fd: number;
  finish(): Promise<void>;
  abort(): void;
  /** Bytes its consumer has taken so far, for the receiver's idle clock (a sink has no offset). */
  progress?(): number;
}

export class IncomingFile {
  private written = 0;
  /** Set for a file whose body goes to a sink, not to `fh`. */
  private sink: FileSink | null = null;
  /** crc32 of the bytes written so far; each chunk's crc must continue it. */
  private crc = 0;
  /** The body came through a sealed pump: authenticated, no crc kept. */
  private pumped = false;
  /** False for sealed frames: GCM authenticated them, the sender computed no crc (and none is checked). */
  private checkCrc = true;

  /** A streamed file (frames.ts): its size is what its body (pumped, or chunks) turns out to be. */
  private streamed = false;

  private constructor(
    readonly path: string,
    private size: number,
    private readonly mode: number,
    private readonly fh: FileHandle | null,
  ) {}

  /** A streamed file whose body the pump writes into `sink` (nothing is created in the image directory). */
  static forSink(frame: FileFrame, sink: FileSink): IncomingFile {
    if (frame.streamed !== true) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${JSON.stringify(frame.path)} is not streamed: it cannot go to a sink`);
    const file = new IncomingFile(frame.path, 0, frame.mode, null);
    file.streamed = true;
    file.checkCrc = false;
    file.sink = sink;
    return file;
  }

  /**
   * Creates the file named by `frame` under `root` (absolute, symlink-free). `checkCrc` false:
   * the frames arrive sealed (chunk-cipher.ts), authenticated in order, and their crcs are 0.
   */
  static async create(root: string, frame: FileFrame, knownDirs: Set<string>, checkCrc = true): Promise<IncomingFile> {
    const fullPath = resolveImagePath(root, frame.path);
    try {
      await makeParentDirs(root, fullPath, knownDirs);
      // O_EXCL: a name sent twice (or clashing with a directory) is refused rather than
      // overwritten; O_NOFOLLOW: never write through a symlink.
      const fh = await open(fullPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      const file = new IncomingFile(frame.path, frame.size, frame.mode, fh);
      file.checkCrc = checkCrc;
      file.streamed = frame.streamed === true;
      return file;
    } catch (err) {
      if (err instanceof FerryError) throw err;
      const code = (err as NodeJS.ErrnoException).code === 'EEXIST' ? ErrorCode.INVALID_ARGUMENT : ErrorCode.TRANSFER_FAILED;
      throw new FerryError(code, `cannot create ${JSON.stringify(frame.path)}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** How far a pump has written its body: the file's offset, or what the sink's consumer has taken. */
  position(pump: { offset(fd: number): number }): number {
    return this.sink ? (this.sink.progress?.() ?? 0) : pump.offset(this.handle().fd);
  }

  /** Its body went to a sink, not to a file in the image directory. */
  get toSink(): boolean {
    return this.sink !== null;
  }

  get isStreamed(): boolean {
    return this.streamed;
  }

  /** The declared size; for a streamed file, 0 until its body has been pumped. */
  get declaredSize(): number {
    return this.size;
  }

  get bytesWritten(): number {
    return this.written;
  }

  /** The open file's descriptor, for a pump to write the body into (from offset 0, in order). */
  get fd(): number {
    return this.sink?.fd ?? this.handle().fd;
  }

  private handle(): FileHandle {
    if (this.fh === null) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${JSON.stringify(this.path)} goes to a sink: it takes a pumped body only`);
    return this.fh;
  }

  /**
   * Records a body a sealed pump wrote in one go (file-pump.ts): every byte was authenticated on
   * the way, so the crc of the eof frame is not checked for it; the size still is.
   */
  recordPumped(bytes: number): void {
    if (this.written !== 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${JSON.stringify(this.path)} got a pumped body after chunks`);
    // A streamed body is as long as its authenticated end frame made it (the pump bounded it).
    if (this.streamed) this.size = bytes;
    if (bytes !== this.size) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `${JSON.stringify(this.path)} ended after ${bytes} of ${this.size} bytes`);
    }
    this.written = bytes;
    this.pumped = true;
  }

  /**
   * Checks and writes one chunk; chunks must arrive in order, without gaps or overlaps. A streamed
   * file has no declared size: `streamedBound` is how far it may grow (the receiver's limits).
   */
  async write(offset: number, data: Uint8Array, crc: number, streamedBound = 0): Promise<void> {
    if (this.pumped) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `chunk of ${JSON.stringify(this.path)}, whose body was pumped`);
    if (this.sink) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `chunk of ${JSON.stringify(this.path)}, which goes to a sink (a pumped body only)`);
    if (offset !== this.written) {
      throw new FerryError(
        ErrorCode.INVALID_ARGUMENT,
        `chunk of ${JSON.stringify(this.path)} at offset ${offset}, expected ${this.written}: out of order or overlapping`,
      );
    }
    if (this.streamed && offset + data.byteLength > streamedBound) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `streamed ${JSON.stringify(this.path)} grows past ${streamedBound} bytes, the receiver's limit`);
    }
    if (!this.streamed && offset + data.byteLength > this.size) {
      throw new FerryError(
        ErrorCode.INVALID_ARGUMENT,
        `chunk of ${JSON.stringify(this.path)} ends at ${offset + data.byteLength}, beyond its declared size ${this.size}`,
      );
    }
    const actualCrc = this.checkCrc ? crc32(data, this.crc) : crc;
    if (actualCrc !== crc) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `chunk of ${JSON.stringify(this.path)} at offset ${offset} is corrupt (crc32 ${actualCrc} != ${crc})`);
    }
    try {
      await writeFully(this.handle(), data, offset);
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `cannot write ${JSON.stringify(this.path)}: ${(err as Error).message}`, { cause: err });
    }
    this.written += data.byteLength;
    this.crc = actualCrc;
  }

  /**
   * Verifies size and crc32 of the whole file, applies the mode and closes the file. `streamedSize`:
   * the eof frame's size, which a streamed file must carry and nothing else may.
   */
  async finish(crc: number, streamedSize?: number): Promise<void> {
    if (this.streamed !== (streamedSize !== undefined)) {
      throw new FerryError(
        ErrorCode.INVALID_ARGUMENT,
        this.streamed ? `eof of streamed ${JSON.stringify(this.path)} without its size` : `eof of ${JSON.stringify(this.path)} with a size, but it was not streamed`,
      );
    }
    // Streamed in chunks: as long as they made it (each one bounded on the way).
    if (this.streamed && !this.pumped && this.sink === null) this.size = this.written;
    if (this.streamed && !this.pumped && this.sink !== null) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `streamed ${JSON.stringify(this.path)} ended without a pumped body`);
    }
    if (streamedSize !== undefined && streamedSize !== this.size) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `${JSON.stringify(this.path)}: the sender streamed ${streamedSize} bytes, ${this.size} arrived`);
    }
    if (this.written !== this.size) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `${JSON.stringify(this.path)} ended after ${this.written} of ${this.size} bytes`);
    }
    if (!this.pumped && this.checkCrc && this.crc !== crc) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `${JSON.stringify(this.path)} has crc32 ${this.crc}, the sender read ${crc}`);
    }
    try {
      if (this.sink) {
        // Its consumer has all of it once the sink is finished (a tar that extracted every member and exited 0).
        await this.sink.finish();
        return;
      }
      // Applied through the fd, after the content, so umask plays no part and a read-only mode
      // (CRIU writes some images 0400) does not stop our own writes.
      await this.handle().chmod(this.mode);
      await this.handle().close();
    } catch (err) {
      throw new FerryError(ErrorCode.TRANSFER_FAILED, `cannot finish ${JSON.stringify(this.path)}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Closes without verifying, after a failure. The partial file stays; the caller owns the directory. */
  async discard(): Promise<void> {
    this.sink?.abort();
    await this.fh?.close().catch(() => undefined);
  }
}
