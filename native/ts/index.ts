// The only door into @ferry/native: the LinuxSyscalls interface and its factory, the kernel
// constants it takes, and its errors. The raw addon stays behind createLinuxSyscalls().
export { createLinuxSyscalls } from './syscalls';
export type { LinuxSyscalls } from './syscalls';
export { SyscallError, SyscallArgumentError, isSyscallError } from './errors';
export * from './constants';
