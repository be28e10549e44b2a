/** How commands print results and failures: JSON for scripts, tables for people, exit codes from error codes. */
import { EXIT_CODES, toFerryError, type FerryError } from '@ferry/protocol';

/**
 * Ends the CLI quietly when the reader of `stream` went away (`ferry ps --json | head -1`), as
 * SIGPIPE ends other unix tools: Node ignores SIGPIPE, so the write fails with EPIPE instead, an
 * error that would otherwise crash with a stack trace. Any other write error still throws.
 */
export function exitOnClosedPipe(stream: NodeJS.WritableStream, exit: (code: number) => void = process.exit): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    exit(0);
  });
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Text from elsewhere (an agent's argv, a workload name from a heartbeat, CRIU's error lines) made
 * safe for a terminal: control characters (C0, DEL, C1, which carry escape sequences that can
 * rewrite the screen or the window title) are shown as `\xNN`, never sent to the terminal.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Left-aligned columns, sized to their widest cell; every cell printable(). */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = [headers, ...rows.map((r) => r.map((c) => printable(String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()}\n`);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Prints the error the way the caller asked for and returns the exit code for it. */
export function reportError(err: unknown, json: boolean): number {
  const fe: FerryError = toFerryError(err);
  if (json) printJson({ error: fe.toBody() });
  else {
    // Messages and details may quote what another host sent: printable() before the terminal sees them.
    process.stderr.write(`ferry: ${fe.code}: ${printable(fe.message)}\n`);
    for (const d of fe.details) process.stderr.write(`  ${printable(d)}\n`);
  }
  return EXIT_CODES[fe.code];
}
