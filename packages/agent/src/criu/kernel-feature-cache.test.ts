import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@ferry/protocol';
import { DEFAULT_CRIU_PATH } from './criu-driver';
import { CRIU_KDAT_PATH, ensureCriuKdatCache, hostKdatCacheDeps, type KdatCacheDeps } from './kernel-feature-cache';

const TMPFS = 0x01021994;
const EXT4 = 0xef53;

function fakeDeps(type: number, generated: () => Promise<Buffer>): KdatCacheDeps & { installed: [string, Buffer][]; generated: number } {
  const deps = {
    installed: [] as [string, Buffer][],
    generated: 0,
    filesystemType: async () => type,
    generate: async () => {
      deps.generated += 1;
      return generated();
    },
    install: async (path: string, bytes: Buffer) => {
      deps.installed.push([path, bytes]);
    },
  };
  return deps;
}

describe('ensureCriuKdatCache', () => {
  test('a tmpfs /run: CRIU keeps its own cache, nothing is run or written', async () => {
    const deps = fakeDeps(TMPFS, async () => Buffer.alloc(912));
    expect(await ensureCriuKdatCache(silentLogger, deps)).toBe('criu keeps it');
    expect(deps.generated).toBe(0);
    expect(deps.installed).toEqual([]);
  });

  test('/run on disk: the cache a fresh criu run made is installed where CRIU reads it', async () => {
    const cache = Buffer.alloc(912, 7);
    const deps = fakeDeps(EXT4, async () => cache);
    expect(await ensureCriuKdatCache(silentLogger, deps)).toBe('written');
    expect(deps.installed).toEqual([[CRIU_KDAT_PATH, cache]]);
  });

  test.each([
    ['criu or unshare failing', async () => Promise.reject(new Error('unshare: unshare failed: Operation not permitted'))],
    ['no cache written (empty output)', async () => Buffer.alloc(0)],
    ['output too large to be a cache', async () => Buffer.alloc(1024 * 1024)],
  ])('%s: nothing installed, the agent goes on (CRIU only runs slower)', async (_what, generate) => {
    const warnings: unknown[] = [];
    const log = { ...silentLogger, warn: (...args: unknown[]) => void warnings.push(args), child: () => log };
    const deps = fakeDeps(EXT4, generate);
    expect(await ensureCriuKdatCache(log as typeof silentLogger, deps)).toBe('failed');
    expect(deps.installed).toEqual([]);
    expect(warnings).toHaveLength(1);
  });
});

describe('hostKdatCacheDeps (this host\'s criu, as the agent runs it)', () => {
  test('the cache a criu run made on a tmpfs /run carries its magic, and criu reads it back from CRIU_KDAT_PATH', async () => {
    const deps = hostKdatCacheDeps(DEFAULT_CRIU_PATH);
    const cache = await deps.generate();
    // criu/include/kerndat.h: KDAT_MAGIC then KDAT_MAGIC_2, each 32 bits, little-endian here.
    expect(cache.readUInt32LE(0)).toBe(0x57023458);
    expect(cache.readUInt32LE(4)).toBe(0x6a6bae11);
    await deps.install(CRIU_KDAT_PATH, cache);
    expect(readFileSync(CRIU_KDAT_PATH)).toEqual(cache);
    const dir = mkdtempSync(join(tmpdir(), 'ferry-kdat-'));
    try {
      execFileSync(DEFAULT_CRIU_PATH, ['check', '--feature', 'uffd-noncoop', '-v4', '--log-file', join(dir, 'check.log')], { stdio: 'ignore' });
      expect(readFileSync(join(dir, 'check.log'), 'utf8')).toContain(`Loaded kdat cache from ${CRIU_KDAT_PATH}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
