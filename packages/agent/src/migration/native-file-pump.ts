/**
 * The transfer package's FilePump, made of @ferry/native's sealed pump: the pumped direct path
 * (file bodies through AES-256-GCM on native threads, no JavaScript per byte).
 */
import type { FilePump } from '@ferry/transfer';
import { SEEK_CUR, socketFd, type LinuxSyscalls } from '@ferry/native';
import { growSocketBuffers } from './page-tunnel';

/** Sealed frames of up to 1 MiB, as the page tunnel's: the per-frame cost disappears beside the bytes. */
export const FILE_BODY_FRAME_BYTES = 1024 * 1024;

export type FilePumpSyscalls = Pick<LinuxSyscalls, 'sealedPump' | 'lseek' | 'setsockoptInt'>;

export function nativeFilePump(sys: FilePumpSyscalls): FilePump {
  return {
    socketFd(socket) {
      const fd = socketFd(socket);
      growSocketBuffers(sys, fd);
      return fd;
    },
    pump: (inFd, outFd, mode, key, noncePrefix, { signal, maxOutBytes }) =>
      // Never shut down: the connection carries the next file's body after this one.
      sys.sealedPump(inFd, outFd, mode, key, noncePrefix, FILE_BODY_FRAME_BYTES, { signal, shutdownOut: false, ...(maxOutBytes !== undefined ? { maxOutBytes } : {}) }),
    offset: (fd) => sys.lseek(fd, 0, SEEK_CUR),
  };
}
