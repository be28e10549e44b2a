import type * as net from 'node:net';

import { SyscallArgumentError } from './errors';

/** The parts of Node's internal TCP/Pipe handle this reads (net.Socket's `_handle`, not public API). */
interface SocketHandle {
  fd?: unknown;
  reading?: boolean;
  readStop?: () => number;
}

function refuse(reason: string): never {
  throw new SyscallArgumentError('socketFd', 'socket', reason);
}

/**
 * The kernel descriptor of a connected Node socket (TCP, or Unix), to hand to a sealed pump (or
 * to recvWithFds), with Node's reading of it stopped.
 *
 * While a pump owns the fd, Node must neither read nor write that socket: a byte Node reads is a
 * byte the pump never sees. socket.pause() alone is not enough: a socket paused after it started
 * flowing (every accepted socket does at once, unless its server has `pauseOnConnect: true`) keeps
 * reading into its buffer until the buffer fills. So this stops the handle's reading itself, and
 * refuses a socket that already holds bytes read from the kernel or queued to write.
 * The socket must stay open (not destroyed: that closes the fd) until the pump has settled.
 */
export function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: SocketHandle | null })._handle;
  if (socket.destroyed || handle === undefined || handle === null) refuse('is destroyed or has no handle');
  if (socket.connecting) refuse('is not connected yet');
  const fd = handle.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) refuse(`has no file descriptor (got ${String(fd)})`);
  if (socket.readableLength > 0) {
    refuse(`already holds ${socket.readableLength} bytes Node read from it; create it paused (pauseOnConnect, or pause() before 'connect')`);
  }
  if (socket.writableLength > 0) refuse(`still has ${socket.writableLength} bytes queued to write`);
  socket.pause();
  if (handle.reading === true && typeof handle.readStop === 'function') {
    const status = handle.readStop();
    if (status !== 0) refuse(`could not stop Node reading it (libuv status ${status})`);
    // As net.Socket#pause does for its own handles: marks the handle stopped.
    handle.reading = false;
  }
  // And it must stay stopped. Readable asks its source for more whenever its buffer runs low:
  // right after a 'data' event (maybeReadMore, on the next tick), or on a read() anyone makes.
  // net.Socket answers by starting the handle again, and the pump's bytes would vanish into a
  // paused buffer (seen: socketFd called from inside a 'data' handler lost the next 4 KiB).
  (socket as unknown as { _read: (size: number) => void })._read = () => undefined;
  return fd;
}
