/**
 * Names of files inside an image directory. The receiver writes wherever a peer's frame says,
 * so every name is checked here before it touches the filesystem: relative, no `..` or `.`
 * segments, no empty segments, no NUL, and each segment within the kernel's NAME_MAX.
 */
import { resolve, sep } from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';

/**
 * Longest relative name accepted, in UTF-8 bytes. CRIU's image names are short (`pages-1.img`);
 * the bound keeps a chunk frame's header well inside FRAME_OVERHEAD_BYTES.
 */
export const MAX_IMAGE_PATH_BYTES = 1024;
/** Longest single path segment, in bytes (NAME_MAX on Linux). */
export const MAX_NAME_SEGMENT_BYTES = 255;

/** Why `name` is not an acceptable relative file name inside an image, or undefined if it is. */
export function imagePathProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) > MAX_IMAGE_PATH_BYTES) return `is longer than ${MAX_IMAGE_PATH_BYTES} bytes`;
  if (name.includes('\0')) return 'contains NUL';
  if (name.startsWith('/')) return 'is absolute';
  for (const segment of name.split('/')) {
    if (segment === '' || segment === '.') return 'has an empty or "." segment';
    if (segment === '..') return 'contains ".."';
    if (Buffer.byteLength(segment) > MAX_NAME_SEGMENT_BYTES) return `has a segment longer than ${MAX_NAME_SEGMENT_BYTES} bytes`;
  }
  return undefined;
}

/**
 * The absolute path of `name` inside `root` (an absolute, symlink-free directory).
 * Throws INVALID_ARGUMENT for a name that is unacceptable or would land outside `root`.
 */
export function resolveImagePath(root: string, name: string): string {
  const problem = imagePathProblem(name);
  if (problem !== undefined) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `file name ${JSON.stringify(name)} ${problem}`);
  }
  const full = resolve(root, name);
  // Belt and braces: the segment checks above already exclude escaping, but a resolved
  // prefix check is what actually guarantees "nothing is written outside the dir".
  if (!full.startsWith(root.endsWith(sep) ? root : root + sep)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `file name ${JSON.stringify(name)} resolves outside the image directory`);
  }
  return full;
}
