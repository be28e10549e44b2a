/**
 * One set of error codes, used on the wire, in exit codes and in every package.
 * Callers branch on `code` (see the `isX` predicates), never on message text.
 */
export const ErrorCode = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  NOT_FOUND: 'NOT_FOUND',
  FAILED_PRECONDITION: 'FAILED_PRECONDITION',
  CONFLICT: 'CONFLICT',
  UNAVAILABLE: 'UNAVAILABLE',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  CHECKPOINT_FAILED: 'CHECKPOINT_FAILED',
  RESTORE_FAILED: 'RESTORE_FAILED',
  TRANSFER_FAILED: 'TRANSFER_FAILED',
  INTERNAL: 'INTERNAL',
  /** No credentials, or ones nobody issued (the HTTP API's 401). */
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /** Known credentials whose role does not allow the action (the HTTP API's 403). */
  PERMISSION_DENIED: 'PERMISSION_DENIED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const ALL_CODES = new Set<string>(Object.values(ErrorCode));

/** Process exit status for each code, so scripts can branch on `$?` (0 is success, 1 is reserved for usage). */
export const EXIT_CODES: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 2,
  NOT_FOUND: 3,
  FAILED_PRECONDITION: 4,
  CONFLICT: 5,
  UNAVAILABLE: 6,
  DEADLINE_EXCEEDED: 7,
  CHECKPOINT_FAILED: 8,
  RESTORE_FAILED: 9,
  TRANSFER_FAILED: 10,
  INTERNAL: 11,
  UNAUTHENTICATED: 12,
  PERMISSION_DENIED: 13,
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && ALL_CODES.has(value);
}

/** The wire form of an error. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  /** Extra lines worth showing an operator, e.g. CRIU's `Error (...)` log lines. */
  details?: string[];
}

/** The base of every error ferry raises on purpose. `cause` is kept for the chain. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly details: string[];

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: string[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FerryError';
    this.code = code;
    this.details = options.details ?? [];
  }

  toBody(): ErrorBody {
    return this.details.length > 0
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }

  static fromBody(body: ErrorBody): FerryError {
    const code = isErrorCode(body.code) ? body.code : ErrorCode.INTERNAL;
    return new FerryError(code, body.message, { details: body.details });
  }
}

/** Wraps anything thrown into a FerryError; a FerryError passes through unchanged. */
export function toFerryError(err: unknown, fallback: ErrorCode = ErrorCode.INTERNAL): FerryError {
  if (err instanceof FerryError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new FerryError(fallback, message, { cause: err });
}

const is = (code: ErrorCode) => (err: unknown): boolean => err instanceof FerryError && err.code === code;
export const isInvalidArgument = is(ErrorCode.INVALID_ARGUMENT);
export const isNotFound = is(ErrorCode.NOT_FOUND);
export const isFailedPrecondition = is(ErrorCode.FAILED_PRECONDITION);
export const isConflict = is(ErrorCode.CONFLICT);
export const isUnavailable = is(ErrorCode.UNAVAILABLE);
export const isDeadlineExceeded = is(ErrorCode.DEADLINE_EXCEEDED);
export const isCheckpointFailed = is(ErrorCode.CHECKPOINT_FAILED);
export const isRestoreFailed = is(ErrorCode.RESTORE_FAILED);
export const isTransferFailed = is(ErrorCode.TRANSFER_FAILED);
export const isUnauthenticated = is(ErrorCode.UNAUTHENTICATED);
export const isPermissionDenied = is(ErrorCode.PERMISSION_DENIED);
