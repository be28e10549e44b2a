/**
 * Length-prefixed frames over a TCP socket, the direct path's framing: a 4-byte big-endian
 * length, then that many bytes (one msgpack frame, exactly what would have been a NATS message).
 */
import type { Socket } from 'node:net';
import { ErrorCode, FerryError } from '@ferry/protocol';

const LENGTH_PREFIX_BYTES = 4;

export interface FrameSocketHandlers {
  /** One whole frame; `bytes` is owned by the callee (never reused by the socket). */
  onFrame(bytes: Uint8Array): void;
  /** The socket closed; `err` is set unless it was closed by end()/destroy() on this side. */
  onClose(err: FerryError | undefined): void;
}

export class FrameSocket {
  private pending: Buffer | undefined;
  private pendingFilled = 0;
  private header: Buffer = Buffer.alloc(0);
  private closedByUs = false;
  private handlers: FrameSocketHandlers | undefined;
  private closed = false;
  /** Frames and the close that happened before attach(), delivered by it. */
  private readonly early: Uint8Array[] = [];
  private earlyClose: { err: FerryError | undefined } | undefined;

  /** `maxFrameBytes` bounds what a peer can make us allocate. */
  constructor(
    readonly socket: Socket,
    private maxFrameBytes: number,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.close(new FerryError(ErrorCode.TRANSFER_FAILED, `direct connection failed: ${err.message}`, { cause: err })));
    socket.on('close', () =>
      this.close(this.closedByUs ? undefined : new FerryError(ErrorCode.TRANSFER_FAILED, 'direct connection closed by the peer')),
    );
  }

  /** Starts delivering frames, first those that arrived before. */
  attach(handlers: FrameSocketHandlers): void {
    this.handlers = handlers;
    for (const frame of this.early.splice(0)) handlers.onFrame(frame);
    if (this.earlyClose !== undefined) handlers.onClose(this.earlyClose.err);
  }

  /** Raises (or lowers) the frame size limit, e.g. once the peer authenticated. */
  setMaxFrameBytes(bytes: number): void {
    this.maxFrameBytes = bytes;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queues one frame; the kernel and Node buffer it, the transfer's window bounds how much. */
  send(bytes: Uint8Array): void {
    if (this.closed) throw new FerryError(ErrorCode.TRANSFER_FAILED, 'direct connection is closed');
    const header = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES);
    header.writeUInt32BE(bytes.byteLength, 0);
    this.socket.cork();
    this.socket.write(header);
    this.socket.write(bytes);
    this.socket.uncork();
  }

  /** Flushes what was sent, then closes. */
  end(): void {
    this.closedByUs = true;
    this.socket.end();
  }

  destroy(): void {
    this.closedByUs = true;
    this.socket.destroy();
  }

  private close(err: FerryError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    if (err !== undefined) this.socket.destroy();
    if (this.handlers !== undefined) this.handlers.onClose(err);
    else this.earlyClose = { err };
  }

  private deliver(frame: Uint8Array): void {
    if (this.handlers !== undefined) this.handlers.onFrame(frame);
    else this.early.push(frame);
  }

  private onData(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.closed) {
      if (this.pending === undefined) {
        // Reading the length prefix, which may itself be split across reads.
        const need = LENGTH_PREFIX_BYTES - this.header.length;
        const part = chunk.subarray(at, at + need);
        this.header = this.header.length === 0 && part.length === LENGTH_PREFIX_BYTES ? part : Buffer.concat([this.header, part]);
        at += part.length;
        if (this.header.length < LENGTH_PREFIX_BYTES) return;
        const length = this.header.readUInt32BE(0);
        this.header = Buffer.alloc(0);
        if (length === 0 || length > this.maxFrameBytes) {
          this.close(new FerryError(ErrorCode.INVALID_ARGUMENT, `direct frame of ${length} bytes (limit ${this.maxFrameBytes})`));
          return;
        }
        // A frame lying whole inside this read is handed over as a view, without a copy.
        if (chunk.length - at >= length) {
          const frame = chunk.subarray(at, at + length);
          at += length;
          this.deliver(frame);
          continue;
        }
        this.pending = Buffer.allocUnsafe(length);
        this.pendingFilled = 0;
      }
      const n = chunk.copy(this.pending, this.pendingFilled, at);
      at += n;
      this.pendingFilled += n;
      if (this.pendingFilled === this.pending.length) {
        const frame = this.pending;
        this.pending = undefined;
        this.deliver(frame);
      }
    }
  }
}
