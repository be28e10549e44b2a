import { withCancelFd } from './cancel-fd';
import type { NativeBinding, SealedPumpCounts, SealedPumpMode } from './native-binding';
import { checkBoolean, checkFd, checkFixedBytes, checkIntegerIn, checkOneOf } from './validate';

/** AES-256 key length. */
export const SEALED_PUMP_KEY_BYTES = 32;
/** Length of the per-direction nonce prefix (the rest of the 12-byte GCM nonce is the frame counter). */
export const SEALED_PUMP_NONCE_PREFIX_BYTES = 4;
/** Smallest frameBytes: below it the 20 bytes a frame adds and its GCM setup start to cost. */
export const SEALED_PUMP_MIN_FRAME_BYTES = 4 * 1024;
/** Largest frameBytes: the buffer each pump allocates, and what an opener accepts at most from its peer. */
export const SEALED_PUMP_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** How a sealed pump finishes, and how it can be stopped. */
export interface SealedPumpOptions {
  /**
   * shutdown(outFd, SHUT_WR) after the end frame was written (seal) or verified (open), so the
   * reader of outFd sees end of stream. outFd must then be a socket (checked before any byte
   * moves). Default true; false for a pipe or file, or when outFd carries more afterwards. Never
   * done after a failure: outFd is left as it is, so its reader cannot take a failed stream for a
   * finished one; the caller closes it.
   */
  shutdownOut?: boolean;
  /**
   * Stops the pump: it rejects with a SyscallError 'ECANCELED' as soon as it notices (in its next
   * wait, or between two frames), and writes no end frame after that, so the reader of a sealed
   * stream sees it cut, never complete. The fds are left open and untouched: the peer learns of
   * the stop when the caller closes them, which it may do once the Promise has settled. A pump
   * that had already finished resolves as usual. Works on any fd, except that a pump blocked
   * writing to a full blocking pipe notices only when that write returns.
   */
  signal?: AbortSignal;
  /**
   * open only: most plaintext bytes the stream may deliver (e.g. a file's declared size). A frame
   * that would go past it fails the pump with 'EFBIG' before any of its bytes is written, so a
   * lying peer cannot fill the disk. Default 0: no bound.
   */
  maxOutBytes?: number;
}

const SYSCALL = 'sealedPump';
const MODES: readonly SealedPumpMode[] = ['seal', 'open'];

/**
 * Moves a byte stream from `inFd` to `outFd` through AES-256-GCM frames, on a native thread of its
 * own: no JavaScript runs per byte, and the event loop stays free. Implements
 * LinuxSyscalls.sealedPump (see there for the wire format and the rules on keys and nonces).
 */
export async function sealedPump(
  native: () => NativeBinding,
  inFd: number,
  outFd: number,
  mode: SealedPumpMode,
  key: Uint8Array,
  noncePrefix: Uint8Array,
  frameBytes: number,
  options: SealedPumpOptions = {},
): Promise<SealedPumpCounts> {
  const args = {
    inFd: checkFd(SYSCALL, 'inFd', inFd),
    outFd: checkFd(SYSCALL, 'outFd', outFd),
    mode: checkOneOf(SYSCALL, 'mode', mode, MODES),
    key: checkFixedBytes(SYSCALL, 'key', key, SEALED_PUMP_KEY_BYTES),
    noncePrefix: checkFixedBytes(SYSCALL, 'noncePrefix', noncePrefix, SEALED_PUMP_NONCE_PREFIX_BYTES),
    frameBytes: checkIntegerIn(SYSCALL, 'frameBytes', frameBytes, SEALED_PUMP_MIN_FRAME_BYTES, SEALED_PUMP_MAX_FRAME_BYTES),
    shutdownOut: checkBoolean(SYSCALL, 'options.shutdownOut', options.shutdownOut ?? true),
    maxOutBytes: checkIntegerIn(SYSCALL, 'options.maxOutBytes', options.maxOutBytes ?? 0, 0, Number.MAX_SAFE_INTEGER),
  };
  return withCancelFd(native, SYSCALL, options.signal, (cancelFd) =>
    native().sealedPump(args.inFd, args.outFd, args.mode, args.key, args.noncePrefix, args.frameBytes, args.shutdownOut, cancelFd, args.maxOutBytes),
  );
}
