/** The memory-counter fixture seen from a test: its counter, self-verification, and how many copies run. */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const FIXTURE = join(__dirname, '..', 'fixtures', 'memory-counter.py');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/**
 * What a fixture that answers SIGUSR1 by writing DIR/view (JSON, renamed into place) says of
 * itself: user-counter.py and proc-view.py report their own view of their state so.
 */
export async function viewAfterSignal<T>(pid: number, dir: string): Promise<T> {
  await rm(join(dir, 'view'), { force: true });
  process.kill(pid, 'SIGUSR1');
  return waitFor('view', async () => (JSON.parse(await readFile(join(dir, 'view'), 'utf8').catch(() => 'null')) as T | null) ?? undefined, 10_000);
}

export class CounterWorkload {
  private constructor(readonly stateDir: string) {}

  static async create(): Promise<CounterWorkload> {
    // Under /tmp on the machine's filesystem, which every namespace host shares.
    return new CounterWorkload(await mkdtemp(join(tmpdir(), 'ferry-wl-')));
  }

  /**
   * `sysvShm`: also hold 8 MiB in a SysV shared memory segment; `churn`: also keep rewriting 16 MiB,
   * a page per tick (the fixture's --churn); both checked by verifyMemory too.
   */
  argv(mib: number, children = false, { sysvShm = false, churn = false }: { sysvShm?: boolean; churn?: boolean } = {}): string[] {
    return ['/usr/bin/python3', FIXTURE, this.stateDir, String(mib), ...(children ? ['--children'] : []), ...(sysvShm ? ['--sysv-shm'] : []), ...(churn ? ['--churn'] : [])];
  }

  async counter(): Promise<number> {
    const text = await readFile(join(this.stateDir, 'counter'), 'utf8').catch(() => '0');
    return Number(text) || 0;
  }

  async starts(): Promise<number> {
    const text = await readFile(join(this.stateDir, 'starts'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).length;
  }

  /** Waits until the counter has moved past `after`. */
  async advancesPast(after: number, timeoutMs = 10_000): Promise<number> {
    return waitFor(`counter > ${after}`, async () => {
      const c = await this.counter();
      return c > after ? c : undefined;
    }, timeoutMs);
  }

  /** Asks the workload (SIGUSR1 to `pid`) to re-hash its memory; resolves with its verdict. */
  async verifyMemory(pid: number): Promise<string> {
    await rm(join(this.stateDir, 'verify'), { force: true });
    process.kill(pid, 'SIGUSR1');
    return waitFor('memory verification', async () => {
      const t = await readFile(join(this.stateDir, 'verify'), 'utf8').catch(() => '');
      return t ? t.split(' ')[0] : undefined;
    }, 20_000);
  }

  /** Processes on the machine running this fixture for this state dir (every host's included). */
  async runningCopies(): Promise<number[]> {
    const pids: number[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const cmd = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      const args = cmd.split('\0');
      // The workload root only (python3 FIXTURE DIR ...), not children, nor zombies.
      if (args[1] === FIXTURE && args[2] === this.stateDir && state !== 'Z') {
        const ppidLine = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        // A forked child has the same command line as its parent; the launcher (unshare) does not.
        const parentArgs = (await readFile(`/proc/${ppidLine[1]}/cmdline`, 'utf8').catch(() => '')).split('\0');
        if (!(parentArgs[1] === FIXTURE && parentArgs[2] === this.stateDir)) pids.push(Number(entry));
      }
    }
    return pids;
  }

  async remove(): Promise<void> {
    await rm(this.stateDir, { recursive: true, force: true });
  }
}
