/**
 * The agent's own record of its workloads, kept on disk so a restarted agent finds the workloads it
 * launched or restored (they outlive it) and knows which ones it left frozen for a migration.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MountSpec, WorkloadState, WorkloadUser } from '@ferry/protocol';
import { workloadLinkName } from '../host/workload-network';

export interface MigrationMark {
  id: string;
  /** source: we froze it and may have to thaw or kill it; target: we restored it and may have to discard it. */
  role: 'source' | 'target';
  /** Source with a service address: CRIU's nftables table locking the frozen connections (tcp-sockets.ts). */
  lockTable?: string;
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
  /** Shared filesystems it uses (absent in inventories written before mounts existed). */
  mounts?: MountSpec[];
  /** Its service address (service-address.ts), configured on this host while it runs here. */
  address?: string;
  /** Host-local directories that belong to it and move with it (absent in older inventories: none). */
  localDirs?: string[];
  /** Run as this user in its own namespaces and root (isolated-root.ts); absent: as root, in the host's. */
  user?: WorkloadUser;
  /** It has its own mount namespace, root and /proc (isolated-root.ts); absent: the host's (older inventories, `--host-root`). */
  ownRoot?: boolean;
  /** Run with --user and an address: in a network namespace of its own, the address its (workload-network.ts). */
  ownNetwork?: boolean;
}

/** The host end of the workload's link, for one in a network namespace of its own (workload-network.ts); else undefined. */
export function linkOf(rec: Pick<WorkloadRecord, 'name' | 'ownNetwork'>): string | undefined {
  return rec.ownNetwork === true ? workloadLinkName(rec.name) : undefined;
}

/**
 * Whether its TCP connections move (in repair mode): it has a service address, and either shares
 * the host's user namespace or has a network namespace of its own (workload-network.ts).
 */
export function connectionsMove(rec: { address?: string; user?: unknown; ownNetwork?: boolean }): boolean {
  return rec.address !== undefined && (rec.user === undefined || rec.ownNetwork === true);
}

/** Whether the workload has a root of its own (isolated-root.ts): run with --user, or without --host-root. */
export function hasOwnRoot(rec: Pick<WorkloadRecord, 'user' | 'ownRoot'>): boolean {
  return rec.ownRoot === true || rec.user !== undefined;
}

interface InventoryFile {
  workloads: WorkloadRecord[];
  /** Mount points this agent mounted itself: only these does it unmount when unused. */
  ownedMounts: string[];
}

export class Inventory {
  private readonly records = new Map<string, WorkloadRecord>();
  private readonly owned = new Set<string>();
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const parsed = JSON.parse(text) as InventoryFile | WorkloadRecord[];
    // The first format was a bare array of workloads.
    const file: InventoryFile = Array.isArray(parsed) ? { workloads: parsed, ownedMounts: [] } : parsed;
    for (const r of file.workloads) this.records.set(r.name, r);
    for (const m of file.ownedMounts) this.owned.add(m);
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

  isOwnedMount(path: string): boolean {
    return this.owned.has(path);
  }

  async setOwnedMount(path: string, owned: boolean): Promise<void> {
    if (owned) this.owned.add(path);
    else this.owned.delete(path);
    await this.save();
  }

  /** True if a workload other than `except` (running or frozen) uses a mount at `path`. */
  mountInUse(path: string, except?: string): boolean {
    return this.all().some((r) => r.name !== except && r.state !== 'exited' && (r.mounts ?? []).some((m) => m.path === path));
  }

  /**
   * Writes to a temporary file and renames it, so a crash never leaves a half-written inventory.
   * Saves are serialized: concurrent migrations on one host save at once, and two writers of one
   * temporary file rename it from under each other (ENOENT) or land an older snapshot last.
   */
  save(): Promise<void> {
    const next = this.saving.catch(() => undefined).then(() => this.writeNow());
    this.saving = next;
    return next;
  }

  private async writeNow(): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const file: InventoryFile = { workloads: this.all(), ownedMounts: [...this.owned] };
    await writeFile(tmp, JSON.stringify(file, null, 2), { mode: 0o600 });
    await rename(tmp, this.file);
  }
}
