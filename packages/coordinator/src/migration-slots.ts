/**
 * Migrations this coordinator is running, counted per source and per target host, so drain and
 * placement can keep to the per-host limits (CoordinatorOptions.maxMigrationsPer{Source,Target}).
 * In memory only: after a restart the recovered migrations are re-added as they are resumed.
 */
export interface SlotEntry {
  from: string;
  to: string;
  /** RSS of the workload on its way: placement counts it as used on the target. */
  rssBytes: number;
}

export class MigrationSlots {
  private readonly active = new Map<string, SlotEntry>();
  private readonly out = new Map<string, number>();
  private readonly inc = new Map<string, { count: number; bytes: number }>();
  private readonly waiters = new Set<() => void>();

  add(id: string, entry: SlotEntry): void {
    if (this.active.has(id)) return;
    this.active.set(id, entry);
    this.out.set(entry.from, (this.out.get(entry.from) ?? 0) + 1);
    const i = this.inc.get(entry.to) ?? { count: 0, bytes: 0 };
    this.inc.set(entry.to, { count: i.count + 1, bytes: i.bytes + entry.rssBytes });
  }

  remove(id: string): void {
    const e = this.active.get(id);
    if (!e) return;
    this.active.delete(id);
    const o = (this.out.get(e.from) ?? 1) - 1;
    if (o > 0) this.out.set(e.from, o);
    else this.out.delete(e.from);
    const i = this.inc.get(e.to);
    if (i && i.count > 1) this.inc.set(e.to, { count: i.count - 1, bytes: i.bytes - e.rssBytes });
    else this.inc.delete(e.to);
    for (const w of [...this.waiters]) w();
  }

  /** The target host of migration `id`, while it runs here. */
  target(id: string): string | undefined {
    return this.active.get(id)?.to;
  }

  has(id: string): boolean {
    return this.active.has(id);
  }

  outgoing(host: string): number {
    return this.out.get(host) ?? 0;
  }

  incoming(host: string): { count: number; bytes: number } {
    return this.inc.get(host) ?? { count: 0, bytes: 0 };
  }

  get size(): number {
    return this.active.size;
  }

  /** Resolves the next time any slot frees (or after `timeoutMs`, so callers re-check hosts that changed). */
  changed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.waiters.add(done);
    });
  }
}
