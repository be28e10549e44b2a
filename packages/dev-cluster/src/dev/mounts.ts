import * as fs from 'node:fs';
import { runCommand } from './run-command';

/** /proc/self/mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Mount points of this process's mount namespace. */
export function listMountPoints(): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => unescapeMountPath(line.split(' ')[4]));
}

/** True if something is mounted on exactly this path. */
export function isMountPoint(target: string): boolean {
  return listMountPoints().includes(target);
}

/** Bounds the unmount loop: a path can carry stacked mounts (e.g. a bind made twice). */
const MAX_STACKED_MOUNTS = 8;

/**
 * Lazily unmounts everything stacked on `target` (no-op if nothing is). Lazy, because an nsfs
 * bind or a namespace directory can be busy; the kernel drops it once unused.
 */
export async function unmountAll(target: string): Promise<void> {
  for (let i = 0; i < MAX_STACKED_MOUNTS && isMountPoint(target); i++) {
    await runCommand('umount', ['--lazy', target]);
  }
}
