/**
 * The agent's own record of its workloads, kept on disk so a restarted agent finds the workloads it
 * launched or restored (they outlive it) and knows which ones it left frozen for a migration.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { WorkloadState } from '@ferry/protocol';

export interface MigrationMark {
  id: string;
  /** source: we froze it and may have to thaw or kill it; target: we restored it and may have to discard it. */
  role: 'source' | 'target';
}

export interface WorkloadRecord {
  name: string;
  /** Root of the workload's tree (init of its PID namespace) in the machine's PID namespace. */
  pid: number;
  /** /proc starttime of `pid`, so a reused pid is never mistaken for the workload. */
  startTime: number;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  logPath: string;
  state: WorkloadState;
  startedAt: string;
  exitCode: number | null;
  migration: MigrationMark | null;
}

export class Inventory {
  private readonly records = new Map<string, WorkloadRecord>();

  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const list = JSON.parse(text) as WorkloadRecord[];
    for (const r of list) this.records.set(r.name, r);
  }

  get(name: string): WorkloadRecord | undefined {
    return this.records.get(name);
  }

  all(): WorkloadRecord[] {
    return [...this.records.values()];
  }

  async put(record: WorkloadRecord): Promise<void> {
    this.records.set(record.name, record);
    await this.save();
  }

  async remove(name: string): Promise<void> {
    if (this.records.delete(name)) await this.save();
  }

  /** Writes to a temporary file and renames it, so a crash never leaves a half-written inventory. */
  async save(): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    await writeFile(tmp, JSON.stringify(this.all(), null, 2), { mode: 0o600 });
    await rename(tmp, this.file);
  }
}
