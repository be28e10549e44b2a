/**
 * The logging surface this library accepts. pino's logger satisfies it, so apps pass theirs
 * (usually a child carrying `migrationId`/`transferId`); the library never writes to the console.
 */
export interface Logger {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

/** A logger that drops everything; the default when none is injected. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
