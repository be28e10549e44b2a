/** The files an image directory holds, as the sender transfers them. */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { imagePathProblem } from './image-path';

export interface ImageFile {
  /** Relative name with `/` separators. */
  path: string;
  absolutePath: string;
  /** Permission bits only. */
  mode: number;
  size: number;
}

/**
 * Every regular file under `dir`, sorted by name, sub-directories included. Anything else
 * (symlink, fifo, socket, device) is INVALID_ARGUMENT: CRIU writes only regular files, and
 * silently skipping one would make the restore fail much later with a less clear error.
 */
export async function listImageFiles(dir: string): Promise<ImageFile[]> {
  const files: ImageFile[] = [];
  async function walk(relativeDir: string): Promise<void> {
    const entries = await readdir(join(dir, relativeDir), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const path = relativeDir === '' ? entry.name : `${relativeDir}/${entry.name}`;
      if (entry.isDirectory()) {
        await walk(path);
        continue;
      }
      if (!entry.isFile()) {
        throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${join(dir, path)} is not a regular file or directory`);
      }
      const problem = imagePathProblem(path);
      if (problem !== undefined) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `file name ${JSON.stringify(path)} ${problem}`);
      const absolutePath = join(dir, path);
      const st = await lstat(absolutePath);
      files.push({ path, absolutePath, mode: st.mode & 0o777, size: st.size });
    }
  }
  try {
    await walk('');
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `cannot list image directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return files;
}
