/**
 * A syscall failed. `code` is the errno name ('EPERM', 'ENOENT', ...), as in Node's own fs
 * errors, so callers branch on it rather than on message text. Callers outside this package
 * wrap it in their own error type (e.g. FerryError) and keep it as `cause`.
 */
export class SyscallError extends Error {
  /** Positive errno value. */
  readonly errno: number;
  /** Symbolic errno name, e.g. 'ENOENT'. */
  readonly code: string;
  /** The syscall that failed, e.g. 'mount', 'pidfd_getfd'. */
  readonly syscall: string;
  /** The path the call was about, when it had one. */
  readonly path: string | undefined;
  /** The second path (link target, mount target), when the call had one. */
  readonly dest: string | undefined;

  constructor(
    fields: { errno: number; code: string; syscall: string; path?: string; dest?: string },
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SyscallError';
    this.errno = fields.errno;
    this.code = fields.code;
    this.syscall = fields.syscall;
    this.path = fields.path;
    this.dest = fields.dest;
  }
}

/**
 * An argument was refused before the syscall was made (wrong type, out of range, relative path,
 * NUL byte). Raised by the TypeScript layer; the kernel was never called.
 */
export class SyscallArgumentError extends Error {
  /** The syscall that was not made. */
  readonly syscall: string;
  /** The name of the refused argument. */
  readonly argument: string;

  constructor(syscall: string, argument: string, reason: string) {
    super(`${syscall}: invalid argument '${argument}': ${reason}`);
    this.name = 'SyscallArgumentError';
    this.syscall = syscall;
    this.argument = argument;
  }
}

/** True for a SyscallError, optionally only for the given errno name(s). */
export function isSyscallError(err: unknown, ...codes: string[]): err is SyscallError {
  return err instanceof SyscallError && (codes.length === 0 || codes.includes(err.code));
}

/** The shape the addon throws: a plain Error with errno/code/syscall set. */
interface NativeErrorFields {
  errno: number;
  code: string;
  syscall: string;
}

// Duck-typed, not `instanceof Error`: the addon creates its errors in Node's main realm, which
// is not the realm of code running in a vm context (as under jest).
function isNativeSyscallError(err: unknown): err is Error & NativeErrorFields {
  if (typeof err !== 'object' || err === null) return false;
  const fields = err as Partial<Error & NativeErrorFields>;
  return typeof fields.errno === 'number' && typeof fields.code === 'string' && typeof fields.syscall === 'string';
}

/**
 * Turns the addon's error into a SyscallError, adding the paths involved to the message.
 * Anything else (a TypeError from the addon's own checks) is returned unchanged.
 */
export function fromNativeError(err: unknown, context: { path?: string; dest?: string } = {}): unknown {
  if (!isNativeSyscallError(err)) return err;
  const where = context.path === undefined ? '' : ` '${context.path}'${context.dest === undefined ? '' : ` -> '${context.dest}'`}`;
  return new SyscallError(
    { errno: err.errno, code: err.code, syscall: err.syscall, path: context.path, dest: context.dest },
    `${err.message}${where}`,
    { cause: err },
  );
}
