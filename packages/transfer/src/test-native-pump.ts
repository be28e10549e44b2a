/**
 * Test support (not exported from the package): the agent's FilePump (native-file-pump.ts), made
 * from @ferry/native directly, with 256 KiB frames so small test files still take several.
 */
import { createLinuxSyscalls, SEEK_CUR, socketFd } from '@ferry/native';
import type { FilePump } from './file-pump';

export const sys = createLinuxSyscalls();

export const nativePump: FilePump = {
  socketFd: (socket) => socketFd(socket),
  pump: (inFd, outFd, mode, key, prefix, { signal, maxOutBytes }) =>
    sys.sealedPump(inFd, outFd, mode, key, prefix, 256 * 1024, { signal, shutdownOut: false, maxOutBytes: maxOutBytes ?? 0 }),
  offset: (fd) => sys.lseek(fd, 0, SEEK_CUR),
};
