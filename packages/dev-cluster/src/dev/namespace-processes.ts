import * as fs from 'node:fs';
import { ProcessIdentity, identifyProcess, killProcesses, terminateProcesses } from './process-identity';

/** Namespace kinds we compare; a host is its net + mnt + uts namespaces. */
const NAMESPACE_KINDS = ['net', 'mnt', 'uts'] as const;
/** Processes may fork while we kill; a few SIGKILL sweeps catch the late ones. */
const MAX_KILL_SWEEPS = 5;

/** The inode of a namespace bind file (equals N in `net:[N]`), or null if the file is not there. */
export function namespaceInode(file: string): number | null {
  try {
    return fs.statSync(file).ino;
  } catch {
    return null;
  }
}

/**
 * Every live process that is in one of the given namespaces (by inode), found through
 * /proc/PID/ns/*. This finds workloads too: a process restored by CRIU is nobody's child of ours.
 */
export function findProcessesInNamespaces(inodes: ReadonlySet<number>): ProcessIdentity[] {
  if (inodes.size === 0) return [];
  const found: ProcessIdentity[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    if (!NAMESPACE_KINDS.some((kind) => inodes.has(readNamespaceInode(pid, kind) ?? -1))) continue;
    const identity = identifyProcess(pid);
    if (identity !== null) found.push(identity);
  }
  return found;
}

function readNamespaceInode(pid: number, kind: string): number | null {
  try {
    // The link reads `net:[4026532179]`.
    const match = /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/${kind}`));
    return match === null ? null : Number(match[1]);
  } catch {
    return null; // the process exited, or is a kernel thread without the link
  }
}

/**
 * Stops every process living in the given namespaces: SIGTERM with a grace period, then SIGKILL
 * sweeps until nothing is left. Returns processes that would not die.
 */
export async function stopProcessesInNamespaces(inodes: ReadonlySet<number>, graceMs: number): Promise<ProcessIdentity[]> {
  await terminateProcesses(findProcessesInNamespaces(inodes), graceMs);
  for (let sweep = 0; sweep < MAX_KILL_SWEEPS; sweep++) {
    const remaining = findProcessesInNamespaces(inodes);
    if (remaining.length === 0) return [];
    await killProcesses(remaining);
  }
  return findProcessesInNamespaces(inodes);
}
