import { readFile } from 'node:fs/promises';

/** Memory of this host from /proc/meminfo (MemAvailable is what a restore can use without swapping). */
export async function readHostMemory(): Promise<{ totalBytes: number; availableBytes: number }> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { totalBytes: kib('MemTotal'), availableBytes: kib('MemAvailable') };
}
