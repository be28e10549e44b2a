import { reportError } from '../output';

/**
 * Wraps a command's action: any error is printed (as JSON with --json) and becomes the exit code
 * of its category. The last argument commander passes is the Command; its options carry --json.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void | number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as { opts?: () => { json?: boolean } } | undefined;
    const json = Boolean(cmd?.opts?.().json);
    try {
      const code = await fn(...args);
      process.exitCode = typeof code === 'number' ? code : 0;
    } catch (err) {
      process.exitCode = reportError(err, json);
    }
  };
}
