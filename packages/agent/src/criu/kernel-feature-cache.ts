/**
 * CRIU's kernel-feature cache (/run/criu.kdat), made by the agent where CRIU cannot keep one.
 *
 * Why: every criu run begins by probing the kernel (kerndat_init: 25-55 ms on this VM kind, the time
 * to "Dumping processes" for a `sleep`) unless it finds /run/criu.kdat, and CRIU writes that file
 * only onto a tmpfs (kerndat_save_cache refuses any other filesystem: a tmpfs /run is cleared at
 * boot, so the cache never outlives the kernel it describes). Where /run is on disk no criu run
 * ever finds one, and three of them (the dump, `criu lazy-pages`, the restore) sit in a migration's
 * downtime. CRIU reads the cache from any filesystem, so the agent writes it: one `criu check` in a
 * private mount namespace with a tmpfs on /run, its cache copied out. Made again at every agent
 * start (the agent starts after each boot), so a kernel or CRIU changed since is never described by
 * an old file; a file CRIU finds stale (magic or size) it removes itself and probes as before.
 * Where /run is a tmpfs (systemd's hosts) CRIU keeps its own and this does nothing.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { toFerryError, type Logger } from '@ferry/protocol';

/** Where CRIU looks for its cache when run as root (criu/kerndat.c, KDAT_RUNDIR "/" "criu.kdat"). */
export const CRIU_KDAT_PATH = '/run/criu.kdat';
/** statfs(2) f_type of a tmpfs. */
const TMPFS_MAGIC = 0x01021994;
/** CRIU 4.2.1's cache is 912 bytes; anything past this is not one. */
const MAX_KDAT_BYTES = 64 * 1024;
const GENERATE_TIMEOUT_MS = 30_000;

/** What making the cache needs, so its policy can be tested without root or CRIU. */
export interface KdatCacheDeps {
  /** statfs(2) f_type of the filesystem holding `path`. */
  filesystemType(path: string): Promise<number>;
  /** The cache a fresh criu run writes onto a tmpfs /run, as bytes. */
  generate(): Promise<Buffer>;
  /** Writes `bytes` to `path` (0600), atomically. */
  install(path: string, bytes: Buffer): Promise<void>;
}

export type KdatCacheOutcome = 'criu keeps it' | 'written' | 'failed';

/** Makes /run/criu.kdat where /run is not a tmpfs (see above). Never throws: without it CRIU only runs slower. */
export async function ensureCriuKdatCache(log: Logger, deps: KdatCacheDeps): Promise<KdatCacheOutcome> {
  try {
    if ((await deps.filesystemType('/run')) === TMPFS_MAGIC) return 'criu keeps it';
    const bytes = await deps.generate();
    if (bytes.length === 0 || bytes.length > MAX_KDAT_BYTES) throw new Error(`criu wrote a cache of ${bytes.length} bytes`);
    await deps.install(CRIU_KDAT_PATH, bytes);
    log.info({ path: CRIU_KDAT_PATH, bytes: bytes.length }, "CRIU's kernel-feature cache written (/run is not a tmpfs, where CRIU keeps its own)");
    return 'written';
  } catch (err) {
    log.warn({ err: toFerryError(err).message }, "could not write CRIU's kernel-feature cache: every criu run probes the kernel first");
    return 'failed';
  }
}

/** The real thing: `unshare` and a shell from util-linux and the base system, `criuPath` for CRIU. */
export function hostKdatCacheDeps(criuPath: string): KdatCacheDeps {
  return {
    filesystemType: async (path) => (await fs.statfs(path)).type,
    generate: () =>
      new Promise((resolve, reject) => {
        // $0 is criu: a tmpfs on /run in a mount namespace of this command's own, one criu run that
        // writes its cache there, and the cache on stdout.
        const script = 'mount -t tmpfs -o mode=0755,size=1m ferry-kdat /run && "$0" check --feature uffd-noncoop >/dev/null 2>&1; cat /run/criu.kdat';
        execFile('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, criuPath], { encoding: 'buffer', timeout: GENERATE_TIMEOUT_MS, maxBuffer: MAX_KDAT_BYTES + 1 }, (err, stdout) =>
          err ? reject(err) : resolve(stdout),
        );
      }),
    install: async (path, bytes) => {
      const tmp = `${path}.ferry-${process.pid}`;
      await fs.writeFile(tmp, bytes, { mode: 0o600 });
      await fs.rename(tmp, path).catch(async (err: unknown) => {
        await fs.rm(tmp, { force: true });
        throw err;
      });
    },
  };
}
