/**
 * A state-class fixture (test/fixtures/*.py taking STATE_DIR first) seen from a test: its counter,
 * its starts, its own view of its state (asked with SIGUSR1, read from STATE_DIR/report) and the
 * processes running it.
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './cluster';
import type { JsonDoc } from './json-doc';
import { waitFor } from './workload';

export class FixtureWorkload {
  private constructor(
    /** Absolute path of the fixture program. */
    readonly fixture: string,
    /** Under /tmp, which every dev-cluster host shares. */
    readonly stateDir: string,
  ) {}

  /** `name`: a file in test/fixtures. */
  static async create(name: string): Promise<FixtureWorkload> {
    return new FixtureWorkload(join(REPO, 'test', 'fixtures', name), await mkdtemp(join(tmpdir(), 'ferry-fx-')));
  }

  /** The command line for `ferry run`: Debian's python3 (root's PATH may hold a pyenv shim). */
  argv(...args: string[]): string[] {
    return ['/usr/bin/python3', this.fixture, this.stateDir, ...args];
  }

  async counter(): Promise<number> {
    return Number(await readFile(join(this.stateDir, 'counter'), 'utf8').catch(() => '0')) || 0;
  }

  /** "start PID" lines: more than one means it was started again rather than restored. */
  async starts(): Promise<number> {
    return (await readFile(join(this.stateDir, 'starts'), 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  }

  async advancesPast(after: number): Promise<number> {
    return waitFor(`counter > ${after}`, async () => {
      const c = await this.counter();
      return c > after ? c : undefined;
    }, 20_000);
  }

  /** Asks the program (SIGUSR1 to `pid`, its root) for its own view of its state. */
  async view(pid: number): Promise<JsonDoc> {
    const file = join(this.stateDir, 'report');
    await rm(file, { force: true });
    process.kill(pid, 'SIGUSR1');
    return waitFor('the workload reported its view', async () => JSON.parse(await readFile(file, 'utf8')), 20_000);
  }

  /** Fixtures that check themselves on SIGUSR1 into STATE_DIR/verify ("OK ..." or "FAIL why"): the verdict. */
  async verify(pid: number): Promise<string> {
    const file = join(this.stateDir, 'verify');
    await rm(file, { force: true });
    process.kill(pid, 'SIGUSR1');
    return waitFor('the workload verified itself', async () => (await readFile(file, 'utf8')).trim() || undefined, 30_000);
  }

  /** A file the program writes itself (STATE_DIR/NAME), trimmed; '' if missing. */
  async file(name: string): Promise<string> {
    return (await readFile(join(this.stateDir, name), 'utf8').catch(() => '')).trim();
  }

  /**
   * Processes on the machine (every host's) running this fixture for this state dir, with their
   * state letter: live ones and the zombies among their children.
   */
  async processes(): Promise<Array<{ pid: number; ppid: number; state: string }>> {
    const found: Array<{ pid: number; ppid: number; state: string }> = [];
    const all = new Map<number, { ppid: number; state: string; args: string[] }>();
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
      if (!stat) continue;
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
      all.set(Number(entry), { ppid: Number(rest[1]), state: rest[0]!, args });
    }
    const ours = (args: string[]) => args[1] === this.fixture && args[2] === this.stateDir;
    for (const [pid, p] of all) {
      // A zombie has no command line: it counts when its parent is one of ours.
      if (ours(p.args) || (p.state === 'Z' && ours(all.get(p.ppid)?.args ?? []))) found.push({ pid, ppid: p.ppid, state: p.state });
    }
    return found;
  }

  async remove(): Promise<void> {
    await rm(this.stateDir, { recursive: true, force: true });
  }
}
