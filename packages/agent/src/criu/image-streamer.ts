/**
 * The capture side of CRIU's image streamer protocol (`criu dump --stream`, criu/img-streamer.c):
 * CRIU connects to `<images dir>/streamer-capture.sock` and, for every image file it writes, sends
 * the file's name (a 4-byte little-endian length, then a protobuf img_streamer_request_entry whose
 * only field is the name) and then the read end of a pipe (SCM_RIGHTS with one dummy byte) that it
 * writes the file into, splicing the memory pages straight from the frozen tree.
 *
 * Why: with a plain dump CRIU writes every page to the work dir and ferry reads it back before it
 * can send anything, so the workload stays frozen for the dump plus the transfer. Here the memory
 * pages (`pages-*.img`) go on the wire while CRIU dumps: the agent hands each such pipe to the
 * image sender as a live file (@ferry/transfer LiveImageFile), whose native pump seals it onto the
 * direct connection. Everything else CRIU writes is small and is drained into the images dir, to
 * be sent once the dump is over. CRIU writes several files at once (a pagemap beside its pages), so
 * every pipe is drained as it comes; a second pages file arriving while one is on the wire is
 * drained into the directory too, so CRIU never waits on a pipe nobody reads.
 *
 * The socket lives in the migration's work dir (0700, root's): only root on this host reaches it,
 * and only the first connection is taken.
 */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SHUT_RDWR, socketFd, type LinuxSyscalls } from '@ferry/native';
import { ErrorCode, FerryError, toFerryError, type Logger } from '@ferry/protocol';
import type { LiveImageFile } from '@ferry/transfer';

export const CAPTURE_SOCKET_NAME = 'streamer-capture.sock';

/** An image name as CRIU makes them (`pages-1.img`, `pagemap-4711.img`): flat, short, no surprises. */
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
/** A request is a name and a few bytes of protobuf framing; anything longer is not CRIU. */
const MAX_REQUEST_BYTES = 4096;
/** What one recvmsg takes; requests are small and each file's pipe comes with one byte. */
const RECV_BYTES = 64 * 1024;
const RECV_MAX_FDS = 8;
/**
 * The pipes CRIU writes into are 64 KiB by default: enlarged, the pump takes up to this much per
 * read (fewer, larger sealed frames) and CRIU splices longer runs of pages between waits. Bounded
 * by /proc/sys/fs/pipe-max-size for a root without CAP_SYS_RESOURCE (as on some VMs).
 */
export const STREAM_PIPE_BYTES = 1024 * 1024;

/** The memory pages: the one kind of image worth putting on the wire while CRIU writes it. */
export function isLiveImageName(name: string): boolean {
  return /^pages-\d+\.img$/.test(name);
}

export type StreamerSyscalls = Pick<LinuxSyscalls, 'recvWithFds' | 'setPipeSize' | 'close' | 'shutdown'>;

export interface CaptureCounts {
  /** Files CRIU streamed. */
  files: number;
  /** Of them, handed to the sender as live files. */
  live: number;
  /** Bytes drained into the images dir (everything not sent live). */
  drainedBytes: number;
}

/** One capture session: listen(), run `criu dump --stream`, then finish() or abort(). */
export class CaptureStreamer {
  private connection: number | undefined;
  private readonly liveQueue: LiveImageFile[] = [];
  /** A live file is with the sender (yielded, not yet let go). */
  private liveTaken = false;
  private wakeLive: (() => void) | undefined;
  private readonly drains: Promise<void>[] = [];
  private criuEnded = false;
  private finishing = false;
  private failure: FerryError | undefined;
  private readonly counts: CaptureCounts = { files: 0, live: 0, drainedBytes: 0 };
  private readonly reading: Promise<void>;
  private resolveConnected!: () => void;

  private constructor(
    private readonly sys: StreamerSyscalls,
    private readonly imagesDir: string,
    private readonly server: Server,
    private readonly log: Logger,
  ) {
    const connected = new Promise<void>((resolve) => (this.resolveConnected = resolve));
    this.reading = connected.then(() => this.readRequests());
    // Surfaced through finished() and the live files; never an unhandled rejection.
    this.reading.catch(() => undefined);
  }

  /** Listens on the images dir's capture socket; CRIU must be started after this resolves. */
  static async listen(sys: StreamerSyscalls, imagesDir: string, log: Logger): Promise<CaptureStreamer> {
    const path = join(imagesDir, CAPTURE_SOCKET_NAME);
    await rm(path, { force: true });
    // Paused: not a byte is read by Node, the descriptor goes to recvWithFds whole.
    const server = createServer({ pauseOnConnect: true });
    const streamer = new CaptureStreamer(sys, imagesDir, server, log);
    server.on('connection', (socket: Socket) => streamer.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return streamer;
  }

  /**
   * The memory pages as CRIU writes them, for the image sender. Each file's descriptor is closed
   * once the sender asks for the next one (or stops). Ends when CRIU has finished and finish() was
   * called; throws what failed the capture.
   */
  async *liveFiles(): AsyncGenerator<LiveImageFile> {
    try {
      for (;;) {
        const file = await this.nextLive();
        if (file === undefined) return;
        this.liveTaken = true;
        try {
          yield file;
        } finally {
          this.sys.close(file.fd);
          this.liveTaken = false;
        }
      }
    } finally {
      // The sender stopped early (it failed): CRIU must not wait on pipes nobody will read.
      if (!this.finishing || this.failure) this.abort(new FerryError(ErrorCode.TRANSFER_FAILED, 'the image sender stopped taking the dump'));
    }
  }

  /** Resolves once CRIU closed the connection and every drained file is on disk. */
  async criuDone(): Promise<CaptureCounts> {
    await this.reading;
    await Promise.all(this.drains);
    if (this.failure) throw this.failure;
    return { ...this.counts };
  }

  /** The images dir is complete (CRIU done, the caller's own files written): the live files end. */
  finish(): void {
    this.finishing = true;
    this.wake();
  }

  /** Stops everything: the socket, every pipe; CRIU's next write fails. Idempotent. */
  abort(err: FerryError): void {
    if (!this.failure) this.failure = err;
    this.closeServer();
    // Shut down, not closed: a recvWithFds may be waiting on it (readRequests closes it after).
    if (this.connection !== undefined) {
      try {
        this.sys.shutdown(this.connection, SHUT_RDWR);
      } catch {
        // Already shut down by the peer.
      }
    }
    for (const file of this.liveQueue.splice(0)) this.sys.close(file.fd);
    this.wake();
  }

  private accept(socket: Socket): void {
    if (this.connection !== undefined || this.failure) {
      // One CRIU per capture: a second connection is not it.
      socket.destroy();
      return;
    }
    try {
      this.connection = socketFd(socket);
    } catch (err) {
      socket.destroy();
      this.abort(toFerryError(err, ErrorCode.CHECKPOINT_FAILED));
      return;
    }
    // No one else may connect now; the path goes too, so the directory lists only image files.
    this.closeServer();
    this.resolveConnected();
  }

  private closeServer(): void {
    if (this.server.listening) this.server.close();
    this.resolveConnected();
  }

  private async readRequests(): Promise<void> {
    let buffered: Buffer = Buffer.alloc(0);
    const fds: number[] = [];
    /** The name whose pipe is due next. */
    let pendingName: string | undefined;
    try {
      for (;;) {
        const fd = this.connection;
        if (fd === undefined) break;
        const got = await this.sys.recvWithFds(fd, RECV_BYTES, RECV_MAX_FDS);
        if (this.failure) break;
        if (got.bytes.length === 0) {
          if (got.fds.length > 0 || buffered.length > 0 || pendingName !== undefined) {
            for (const extra of got.fds) this.sys.close(extra);
            throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `CRIU's image streamer connection ended inside a request`);
          }
          break;
        }
        buffered = buffered.length === 0 ? got.bytes : Buffer.concat([buffered, got.bytes]);
        fds.push(...got.fds);
        for (;;) {
          if (pendingName === undefined) {
            if (buffered.length < 4) break;
            const length = buffered.readUInt32LE(0);
            if (length > MAX_REQUEST_BYTES) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `image streamer request of ${length} bytes: not CRIU`);
            if (buffered.length < 4 + length) break;
            pendingName = requestedName(buffered.subarray(4, 4 + length));
            buffered = buffered.subarray(4 + length);
            continue;
          }
          // The pipe travels with one dummy byte.
          if (buffered.length < 1) break;
          const pipe = fds.shift();
          if (pipe === undefined) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `CRIU sent no pipe for ${pendingName}`);
          buffered = buffered.subarray(1);
          this.take(pendingName, pipe);
          pendingName = undefined;
        }
      }
      if (fds.length > 0) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `CRIU sent ${fds.length} descriptors it named no file for`);
    } catch (err) {
      for (const fd of fds.splice(0)) this.sys.close(fd);
      this.abort(toFerryError(err, ErrorCode.CHECKPOINT_FAILED));
      throw this.failure;
    } finally {
      this.criuEnded = true;
      if (this.connection !== undefined) {
        this.sys.close(this.connection);
        this.connection = undefined;
      }
      this.wake();
    }
  }

  /** One file's pipe: to the sender when it is memory and the wire is free, else into the directory. */
  private take(name: string, pipe: number): void {
    this.counts.files += 1;
    try {
      this.sys.setPipeSize(pipe, STREAM_PIPE_BYTES);
    } catch {
      // Above pipe-max-size without CAP_SYS_RESOURCE: the default size only costs smaller reads.
    }
    if (isLiveImageName(name) && !this.liveTaken && this.liveQueue.length === 0 && !this.failure) {
      this.counts.live += 1;
      this.liveQueue.push({ path: name, mode: 0o600, fd: pipe });
      this.wake();
      return;
    }
    this.drains.push(this.drain(name, pipe));
  }

  private async drain(name: string, pipe: number): Promise<void> {
    // A net.Socket reads the pipe on the event loop (no pool thread waits on CRIU) and closes it at the end.
    const source = new Socket({ fd: pipe, readable: true, writable: false });
    let bytes = 0;
    source.on('data', (chunk: Buffer) => (bytes += chunk.length));
    try {
      await pipeline(source, createWriteStream(join(this.imagesDir, name), { flags: 'wx', mode: 0o600 }));
      this.counts.drainedBytes += bytes;
    } catch (err) {
      source.destroy();
      const fe = new FerryError(ErrorCode.CHECKPOINT_FAILED, `writing streamed image ${name}: ${(err as Error).message}`, { cause: err });
      this.abort(fe);
      throw fe;
    }
  }

  private async nextLive(): Promise<LiveImageFile | undefined> {
    for (;;) {
      if (this.failure) throw this.failure;
      const file = this.liveQueue.shift();
      if (file !== undefined) return file;
      if (this.criuEnded && this.finishing) {
        await Promise.all(this.drains);
        if (this.failure) throw this.failure;
        return undefined;
      }
      await new Promise<void>((resolve) => (this.wakeLive = resolve));
    }
  }

  private wake(): void {
    const wake = this.wakeLive;
    this.wakeLive = undefined;
    wake?.();
  }
}

/**
 * The file name in an img_streamer_request_entry: field 1 (tag 0x0a), a varint length, the bytes.
 * Anything else, or a name CRIU would not write, fails the capture.
 */
export function requestedName(message: Buffer): string {
  if (message.length < 2 || message[0] !== 0x0a) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, 'image streamer request without a file name');
  let length = 0;
  let at = 1;
  for (let shift = 0; ; shift += 7) {
    const byte = message[at++];
    if (byte === undefined || shift > 14) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, 'image streamer request with a broken name length');
    length |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) break;
  }
  if (at + length !== message.length) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, 'image streamer request with trailing or missing bytes');
  const name = message.subarray(at).toString('utf8');
  if (!IMAGE_NAME.test(name) || name === CAPTURE_SOCKET_NAME) throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `image streamer asked for ${JSON.stringify(name)}, not an image name`);
  return name;
}
