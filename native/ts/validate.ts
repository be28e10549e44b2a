import { types } from 'node:util';

import { SyscallArgumentError } from './errors';

// Checks made before any syscall. They refuse what the kernel would misread silently (a NUL
// byte truncates a C string, a fractional fd is rounded) and what is a bug in ferry (relative
// paths resolve against whatever the cwd happens to be).

const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;
/** PATH_MAX counts bytes including the terminating NUL. */
const PATH_MAX_BYTES = 4096;

function integerIn(syscall: string, name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SyscallArgumentError(syscall, name, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

/** A file descriptor: an integer >= 0. */
export function checkFd(syscall: string, name: string, value: unknown): number {
  return integerIn(syscall, name, value, 0, INT32_MAX);
}

/** A process id: an integer > 0 (0 and negatives mean process groups or "any" to the kernel). */
export function checkPid(syscall: string, name: string, value: unknown): number {
  return integerIn(syscall, name, value, 1, INT32_MAX);
}

/** A flags word the kernel takes as int. */
export function checkIntFlags(syscall: string, name: string, value: unknown): number {
  return integerIn(syscall, name, value, 0, INT32_MAX);
}

/** A flags word the kernel takes as unsigned (mount flags). */
export function checkUintFlags(syscall: string, name: string, value: unknown): number {
  return integerIn(syscall, name, value, 0, UINT32_MAX);
}

/** A string the kernel will read as a C string: no NUL bytes, at most PATH_MAX bytes. */
export function checkCString(syscall: string, name: string, value: unknown): string {
  if (typeof value !== 'string') throw new SyscallArgumentError(syscall, name, 'must be a string');
  if (value.includes('\0')) throw new SyscallArgumentError(syscall, name, 'must not contain NUL bytes');
  if (value.length === 0) throw new SyscallArgumentError(syscall, name, 'must not be empty');
  if (Buffer.byteLength(value) >= PATH_MAX_BYTES) {
    throw new SyscallArgumentError(syscall, name, `must be shorter than ${PATH_MAX_BYTES} bytes`);
  }
  return value;
}

/** As checkCString, or null (a NULL pointer for the kernel). */
export function checkNullableCString(syscall: string, name: string, value: unknown): string | null {
  return value === null ? null : checkCString(syscall, name, value);
}

/** An absolute path. */
export function checkAbsolutePath(syscall: string, name: string, value: unknown): string {
  const checked = checkCString(syscall, name, value);
  if (!checked.startsWith('/')) throw new SyscallArgumentError(syscall, name, `must be absolute, got '${checked}'`);
  return checked;
}

/** A boolean (an option the addon takes as a C++ bool). */
export function checkBoolean(syscall: string, name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new SyscallArgumentError(syscall, name, `must be a boolean, got ${String(value)}`);
  return value;
}

/**
 * A Uint8Array (a Buffer is one) of exactly `length` bytes. util.types, not instanceof: a Buffer
 * made in another realm (jest's vm context) is not an instance of this realm's Uint8Array.
 */
export function checkFixedBytes(syscall: string, name: string, value: unknown, length: number): Uint8Array {
  if (!types.isUint8Array(value)) throw new SyscallArgumentError(syscall, name, 'must be a Uint8Array or Buffer');
  if (value.byteLength !== length) {
    throw new SyscallArgumentError(syscall, name, `must be exactly ${length} bytes, got ${value.byteLength}`);
  }
  return value;
}

/** One of the given strings. */
export function checkOneOf<T extends string>(syscall: string, name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new SyscallArgumentError(syscall, name, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${String(value)}`);
  }
  return value as T;
}

/** An integer in [min, max]. */
export function checkIntegerIn(syscall: string, name: string, value: unknown, min: number, max: number): number {
  return integerIn(syscall, name, value, min, max);
}
