/**
 * What an ImageReceiver may be told, the limits it enforces, and their defaults.
 */
import { ErrorCode, FerryError, silentLogger, type Logger } from '@ferry/protocol';
import { assertImageKey, type InPlaceAead } from './chunk-cipher';
import type { FilePump } from './file-pump';
import type { FileSink } from './incoming-file';

/** The sender is considered gone when no frame arrives for this long. */
export const DEFAULT_RECEIVE_IDLE_TIMEOUT_MS = 30_000;
/** Largest single file accepted. CRIU's pages image is about the size of the workload's RSS. */
export const DEFAULT_MAX_FILE_BYTES = 16 * 1024 ** 3;
/** Largest image accepted, all files together. */
export const DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 ** 3;
/** Most files accepted; a CRIU image of a process tree has a few per process. */
export const DEFAULT_MAX_FILES = 100_000;
/**
 * Frames received and not yet written beyond which the sender is ignoring the window.
 * Far above any sane window, it only bounds memory against a misbehaving peer.
 */
export const MAX_QUEUED_FRAMES = 1024;

export interface ImageReceiverOptions {
  /** Fail with DEADLINE_EXCEEDED when no frame arrives (and none is being written) for this long. */
  idleTimeoutMs: number;
  /**
   * How long the first frame may take, from start(): the source sends nothing while CRIU dumps
   * (with a page server, while every memory page goes that way), which grows with the workload's
   * memory. Default: idleTimeoutMs.
   */
  firstFrameTimeoutMs?: number;
  /** Largest declared file size accepted, in bytes. */
  maxFileBytes: number;
  /** Largest sum of declared file sizes accepted, in bytes; a sender cannot fill the disk beyond it. */
  maxTotalBytes: number;
  /** Most files accepted. */
  maxFiles: number;
  /**
   * Address (of this host, reachable by the sender) to offer a direct TCP data path on; unset:
   * NATS only. The sender decides which path it uses; a receiver takes either.
   */
  directListenAddress?: string;
  /** Per-migration key: every data frame must be sealed with it (chunk-cipher.ts); null: frames in clear. */
  imageKey?: Uint8Array | null;
  /** With a key and a direct address: offers the pumped direct path (file-pump.ts). */
  filePump?: FilePump | null;
  /** Opens frames in place (chunk-cipher.ts); default node:crypto. */
  frameAead?: InPlaceAead | null;
  /**
   * Called once a file has arrived whole and verified (its name, and where it is), e.g. to start
   * working on it while the rest of the image still comes. Must not throw or touch other files.
   */
  onFileReceived?: ((path: string, absolutePath: string) => void) | null;
  /**
   * Asked for each streamed file of a pumped transfer (frames.ts): a sink to pump its body into
   * instead of a file in the image directory (incoming-file.ts FileSink), or undefined for a file.
   */
  openSink?: ((path: string) => FileSink | undefined) | null;
  logger?: Logger;
}

export function defaultImageReceiverOptions(): ImageReceiverOptions {
  return {
    idleTimeoutMs: DEFAULT_RECEIVE_IDLE_TIMEOUT_MS,
    maxFileBytes: DEFAULT_MAX_FILE_BYTES,
    maxTotalBytes: DEFAULT_MAX_TOTAL_BYTES,
    maxFiles: DEFAULT_MAX_FILES,
  };
}

export function compileImageReceiverOptions(options: Partial<ImageReceiverOptions>): Required<ImageReceiverOptions> {
  const merged = { ...defaultImageReceiverOptions(), ...options };
  for (const key of ['idleTimeoutMs', 'maxFileBytes', 'maxTotalBytes', 'maxFiles'] as const) {
    if (!Number.isSafeInteger(merged[key]) || merged[key] < (key === 'idleTimeoutMs' ? 1 : 0)) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${key} must be a non-negative integer, got ${String(merged[key])}`);
    }
  }
  if (merged.imageKey) assertImageKey(merged.imageKey);
  const firstFrameTimeoutMs = merged.firstFrameTimeoutMs ?? merged.idleTimeoutMs;
  if (!Number.isSafeInteger(firstFrameTimeoutMs) || firstFrameTimeoutMs < 1) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `firstFrameTimeoutMs must be a positive integer, got ${String(firstFrameTimeoutMs)}`);
  }
  return {
    ...merged,
    firstFrameTimeoutMs,
    directListenAddress: merged.directListenAddress ?? '',
    imageKey: merged.imageKey ?? null,
    filePump: merged.filePump ?? null,
    frameAead: merged.frameAead ?? null,
    onFileReceived: merged.onFileReceived ?? null,
    openSink: merged.openSink ?? null,
    logger: merged.logger ?? silentLogger,
  };
}
