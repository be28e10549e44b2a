/** The logging surface the dev-cluster machinery accepts (pino-compatible); the CLI passes a pino logger. */
export interface DevLogger {
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
  child(bindings: Record<string, unknown>): DevLogger;
}

/** A logger that drops everything, for tests and callers that do not care. */
export const silentDevLogger: DevLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentDevLogger,
};
