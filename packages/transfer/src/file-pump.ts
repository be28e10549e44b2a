/**
 * The pumped direct path: file bodies cross the direct TCP connection through native sealed
 * pumps (AES-256-GCM frames, @ferry/native's sealedPump), never through JavaScript; the small
 * control frames (file, eof, end, acks) keep travelling over NATS, sealed and authenticated as
 * before. The transfer package knows the pump only by this interface: the agent hands in the
 * native one, tests may hand in another, and without one (or without a key) the direct path
 * carries chunk frames as it always did.
 *
 * Each file body is a sealed stream of its own on the one connection: a key derived from the
 * migration's image key and the transfer id (so no other transfer's stream opens under it), and
 * a nonce prefix from the file frame's seq (so a body cannot be replayed as another file's). Its
 * end frame is authenticated, so a body cut short is told from a whole one.
 */
import { hkdfSync } from 'node:crypto';
import type { Socket } from 'node:net';

/** Counts a finished pump reports: plaintext bytes read (seal) and written (open). */
export interface FilePumpCounts {
  bytesIn: number;
  bytesOut: number;
}

export interface FilePump {
  /**
   * The connected socket's descriptor, with Node's reading of it stopped from now on (the
   * pumps read it). Throws when Node already holds bytes read from it.
   */
  socketFd(socket: Socket): number;
  /**
   * Moves one sealed stream from inFd to outFd: `seal` reads plaintext to end of file, `open`
   * reads frames up to the stream's end frame and not a byte beyond. Neither fd is closed or
   * shut down. Rejects when the stream is cut, forged, longer than maxOutBytes, or the signal fires.
   */
  pump(
    inFd: number,
    outFd: number,
    mode: 'seal' | 'open',
    key: Uint8Array,
    noncePrefix: Uint8Array,
    options: { signal: AbortSignal; /** open: most plaintext bytes the stream may deliver. */ maxOutBytes?: number },
  ): Promise<FilePumpCounts>;
  /** The descriptor's current offset: how far a pump has read (seal) or written (open) a file. */
  offset(fd: number): number;
}

/** The key of every file body of one transfer: never the image key itself. */
export function fileBodyKey(imageKey: Uint8Array, transferId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', imageKey, Buffer.alloc(0), `ferry direct file bodies v1 ${transferId}`, 32));
}

/** A body's nonce prefix: the 32-bit seq of the file frame that announced it. */
export function fileBodyNoncePrefix(fileSeq: number): Buffer {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(fileSeq >>> 0, 0);
  return prefix;
}

/** Files of one transfer are announced by seqs below this (a prefix must never repeat under one key). */
export const MAX_PUMPED_FILE_SEQ = 0xffff_ffff;

/** How often a pumping side looks at its file's offset to tell a slow body from a stalled one. */
export function pumpProgressIntervalMs(idleTimeoutMs: number): number {
  return Math.max(10, Math.min(1_000, Math.floor(idleTimeoutMs / 4)));
}

/**
 * While a pump moves a file body, reads how far it got (`position`: the file's offset, or what a
 * sink's consumer has read) every pumpProgressIntervalMs and calls `onProgress(position)` when it
 * moved: the pump itself reports only at the end. Returns the stop function (call it before
 * closing the fd).
 */
export function watchPumpProgress(position: () => number, idleTimeoutMs: number, onProgress: (offset: number) => void): () => void {
  let last = 0;
  const ticker = setInterval(() => {
    let at: number;
    try {
      at = position();
    } catch {
      // The fd is going away after a failure: nothing to watch.
      return;
    }
    if (at !== last) onProgress(at);
    last = at;
  }, pumpProgressIntervalMs(idleTimeoutMs));
  return () => clearInterval(ticker);
}
