/**
 * The pre-flight's verdict on a workload's local files: what the source holds open on its own
 * disks (its `migratable` reply) against what the target has (its `check-files` reply). Pure.
 */
import { ErrorCode, FerryError, type CheckFilesReply } from '@ferry/protocol';

/** Files named in the message; the rest are in the details. */
const NAMED_IN_MESSAGE = 10;
/** ErrorBodySchema takes at most 200 details. */
const MAX_DETAILS = 200;

const WHY: Record<CheckFilesReply['different'][number]['why'], string> = {
  type: 'not a regular file',
  size: 'size',
  mtime: 'mtime',
  sha256: 'sha256',
  written: 'being written on the source',
};

/**
 * FAILED_PRECONDITION naming the files the target lacks or has as other files (the first 10 in
 * the message, up to 200 in the details), with what to do instead; null when it has them all.
 */
export function localFilesRefusal(workload: string, from: string, to: string, check: Pick<CheckFilesReply, 'missing' | 'different'>): FerryError | null {
  const problems = [
    ...check.missing.map((path) => `only on ${from}: ${path}`),
    ...check.different.map((d) => `differs on ${to} (${WHY[d.why]}): ${d.path}`),
  ];
  if (problems.length === 0) return null;
  const more = problems.length > NAMED_IN_MESSAGE ? `; and ${problems.length - NAMED_IN_MESSAGE} more` : '';
  const details =
    problems.length > MAX_DETAILS ? [...problems.slice(0, MAX_DETAILS - 1), `and ${problems.length - (MAX_DETAILS - 1)} more`] : problems;
  return new FerryError(
    ErrorCode.FAILED_PRECONDITION,
    `${workload} holds open ${problems.length} file(s) on ${from}'s local disk that ${to} does not have as the same file ` +
      `(CRIU reopens them by path): ${problems.slice(0, NAMED_IN_MESSAGE).join('; ')}${more}; ` +
      'declare their directories with `ferry run --local-dir` (they then move with it) or keep them on a cluster filesystem (`--mount`)',
    { details },
  );
}

/**
 * FAILED_PRECONDITION naming the directories the workload's own root binds from the source that
 * the target does not have (the restore would fail at its first missing one); null when it has them all.
 */
export function rootDirsRefusal(workload: string, from: string, to: string, check: Pick<CheckFilesReply, 'missingDirs'>): FerryError | null {
  const missing = check.missingDirs ?? [];
  if (missing.length === 0) return null;
  return new FerryError(
    ErrorCode.FAILED_PRECONDITION,
    `${workload}'s own root binds ${missing.join(', ')} from ${from}, which ${to} does not have as ${missing.length === 1 ? 'a directory' : 'directories'}: ` +
      `create ${missing.length === 1 ? 'it' : 'them'} on ${to}, or run the workload with --host-root`,
    { details: missing.slice(0, MAX_DETAILS) },
  );
}
