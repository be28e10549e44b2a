import { constants as osConstants } from 'node:os';

import { SHUT_WR } from './constants';
import { SyscallError, fromNativeError } from './errors';
import type { NativeBinding } from './native-binding';

/** The error a call stopped by its AbortSignal rejects with before it started (the native side reports its own). */
function canceled(syscall: string, cause: unknown): SyscallError {
  return new SyscallError(
    { errno: osConstants.errno.ECANCELED, code: 'ECANCELED', syscall },
    `${syscall}: ECANCELED (stopped by its AbortSignal)`,
    { cause },
  );
}

/**
 * Runs a native call that takes a cancel descriptor (the sealed pump, precopyRead, dedupPages)
 * with one for `signal` (-1 without a signal), and turns its errors into SyscallErrors.
 *
 * The native thread watches the read end of a socketpair of its own; an abort shuts the write end,
 * which makes the read end readable (end of stream). Not shutdown(2) on the data fds: shutting a
 * seal pump's inFd down is an orderly end of input, and pumps that share a socket (a tunnel's two
 * directions) would stop each other in an order no one chose.
 */
export async function withCancelFd<T>(
  native: () => NativeBinding,
  syscall: string,
  signal: AbortSignal | undefined,
  call: (cancelFd: number) => Promise<T>,
): Promise<T> {
  if (signal === undefined) {
    try {
      return await call(-1);
    } catch (err) {
      throw fromNativeError(err);
    }
  }
  if (signal.aborted) throw canceled(syscall, signal.reason);
  let cancelPair: [number, number];
  try {
    cancelPair = native().socketpair();
  } catch (err) {
    throw fromNativeError(err);
  }
  const [cancelRead, cancelWrite] = cancelPair;
  const stop = (): void => native().shutdown(cancelWrite, SHUT_WR);
  signal.addEventListener('abort', stop, { once: true });
  try {
    return await call(cancelRead);
  } catch (err) {
    throw fromNativeError(err);
  } finally {
    signal.removeEventListener('abort', stop);
    // The native thread has let go of the pair: it has ended.
    native().close(cancelRead);
    native().close(cancelWrite);
  }
}
