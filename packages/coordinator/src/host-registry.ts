/**
 * What the coordinator knows of hosts and their workloads: learned from registrations and
 * heartbeats, kept in memory (a heartbeat a second from every host must stay cheap) and written to
 * Redis only when something an operator would care about changes (join, loss, cordon).
 */
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { ErrorCode, FerryError, type CriuInfo, type Heartbeat, type HostInfo, type RegisterRequest, type WorkloadInfo } from '@ferry/protocol';
import type { MigrationSlots } from './migration-slots';
import type { PlacementHost } from './placement';

interface HostEntry {
  name: string;
  address: string;
  criu: CriuInfo;
  memory: { totalBytes: number; availableBytes: number };
  bootId: string;
  cordoned: boolean;
  lastHeartbeatAt: number;
  state: 'alive' | 'lost';
  workloads: WorkloadInfo[];
  /** workloadsDigest of the last full list the host sent ('' = none yet). */
  digest: string;
  /** The agent's public seal key (migration secrets are sealed to it); kept in memory, every beat repeats it. */
  sealKey?: Uint8Array;
}

/** How long a finished migration overrides heartbeats that may have been taken before it (several beats). */
const RECENT_MOVE_MS = 5_000;

export interface HostRegistryEvents {
  joined: [host: string];
  lost: [host: string];
  restarted: [host: string];
  /** setCordoned changed the flag (true: cordoned). */
  cordon: [host: string, cordoned: boolean];
}

/**
 * Only the workloads an agent reports for its own host: an entry naming another host would let one
 * agent shadow another host's workload in `migrate` and `drain` (the subject already ties the
 * report to its host, heartbeat.<host>; this ties every entry to it too).
 */
function ownWorkloads(host: string, workloads: WorkloadInfo[]): WorkloadInfo[] {
  return workloads.filter((w) => w.host === host);
}

export class HostRegistry extends EventEmitter<HostRegistryEvents> {
  private readonly hosts = new Map<string, HostEntry>();
  /** Migrations that just finished, by workload (see withRecentMoves). */
  private readonly recentMoves = new Map<string, { from: string; to: string; entry: WorkloadInfo; until: number; stopped?: boolean }>();
  /** Workloads the coordinator saw stopped or released, by host/name (see withRecentMoves). */
  private readonly recentRemovals = new Map<string, { host: string; name: string; pid: number; until: number }>();
  /**
   * Only the leading coordinator writes hosts to Redis: a standby's view of `cordoned` may be
   * stale and must never overwrite the leader's.
   */
  writable = true;

  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly hostLostAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  private get key(): string {
    return `${this.keyPrefix}hosts`;
  }

  /** Loads hosts a previous coordinator knew; they count as lost until they beat again. */
  async load(): Promise<void> {
    const all = await this.redis.hgetall(this.key);
    for (const [name, json] of Object.entries(all)) {
      const saved = JSON.parse(json) as Pick<HostEntry, 'name' | 'address' | 'criu' | 'cordoned' | 'bootId'>;
      this.hosts.set(name, {
        ...saved,
        memory: { totalBytes: 0, availableBytes: 0 },
        lastHeartbeatAt: 0,
        state: 'lost',
        workloads: [],
        digest: '',
      });
    }
  }

  /** Takes the cordon flags from Redis (a standby that just became leader). */
  async reloadCordons(): Promise<void> {
    const all = await this.redis.hgetall(this.key);
    for (const [name, json] of Object.entries(all)) {
      const saved = JSON.parse(json) as Pick<HostEntry, 'name' | 'address' | 'criu' | 'cordoned' | 'bootId'>;
      const e = this.hosts.get(name);
      if (e) e.cordoned = saved.cordoned;
      else this.hosts.set(name, { ...saved, memory: { totalBytes: 0, availableBytes: 0 }, lastHeartbeatAt: 0, state: 'lost', workloads: [], digest: '' });
    }
    // A Redis that lost its data (restarted without persistence) learns the hosts again.
    for (const e of this.hosts.values()) if (!(e.name in all)) await this.persist(e);
  }

  private async persist(e: HostEntry): Promise<void> {
    if (!this.writable) return;
    const { name, address, criu, cordoned, bootId } = e;
    await this.redis.hset(this.key, name, JSON.stringify({ name, address, criu, cordoned, bootId }));
  }

  async register(req: RegisterRequest): Promise<void> {
    await this.seen({ ...req, workloads: this.hosts.get(req.host)?.workloads ?? [] }, true);
  }

  /**
   * Applies a heartbeat (or a registration); returns quickly unless the host is new or back.
   * Resolves true when the beat carried no workload list and the one known here is not the one
   * its digest describes: the caller should ask the agent for its list.
   */
  async seen(hb: Pick<Heartbeat, 'host' | 'bootId' | 'address' | 'criu' | 'memory' | 'workloads' | 'workloadsDigest' | 'sealKey'>, isRegistration = false): Promise<boolean> {
    const prev = this.hosts.get(hb.host);
    const listed = isRegistration ? undefined : hb.workloads;
    const stale = !isRegistration && listed === undefined && (prev === undefined || prev.bootId !== hb.bootId || prev.digest !== (hb.workloadsDigest ?? ''));
    const entry: HostEntry = {
      name: hb.host,
      address: hb.address,
      criu: hb.criu,
      memory: hb.memory,
      bootId: hb.bootId,
      cordoned: prev?.cordoned ?? false,
      lastHeartbeatAt: this.now(),
      state: 'alive',
      workloads: listed ? this.withRecentMoves(hb.host, ownWorkloads(hb.host, listed)) : (prev?.workloads ?? []),
      digest: listed ? (hb.workloadsDigest ?? '') : (prev?.digest ?? ''),
      // A restarted agent (new bootId) has a new key: never keep the old one for it.
      ...(hb.sealKey ? { sealKey: hb.sealKey } : prev?.bootId === hb.bootId && prev.sealKey ? { sealKey: prev.sealKey } : {}),
    };
    this.hosts.set(hb.host, entry);
    if (!prev || prev.state === 'lost' || prev.bootId !== hb.bootId || prev.address !== hb.address) {
      await this.persist(entry);
      if (!prev || prev.state === 'lost') this.emit('joined', hb.host);
      else if (prev.bootId !== hb.bootId) this.emit('restarted', hb.host);
    }
    return stale;
  }

  /** A host's full workload list, fetched from its agent because a heartbeat's digest was unknown here. */
  setWorkloads(host: string, workloads: WorkloadInfo[], digest: string): void {
    const e = this.hosts.get(host);
    if (!e) return;
    e.workloads = this.withRecentMoves(host, ownWorkloads(host, workloads));
    e.digest = digest;
  }

  /** Marks hosts without a recent heartbeat as lost. */
  sweep(): void {
    const now = this.now();
    for (const e of this.hosts.values()) {
      if (e.state === 'alive' && now - e.lastHeartbeatAt > this.hostLostAfterMs) {
        e.state = 'lost';
        this.emit('lost', e.name);
      }
    }
  }

  /** Persisted before it takes effect, so a restarted or new leader keeps the host cordoned. */
  async setCordoned(host: string, cordoned: boolean): Promise<void> {
    const e = this.require(host);
    await this.persist({ ...e, cordoned });
    // A heartbeat may have replaced the entry while this was persisted (seen() builds a new one
    // from the old flag): the flag goes on the entry the registry holds now, or it is lost.
    const current = this.hosts.get(host) ?? e;
    const changed = current.cordoned !== cordoned;
    current.cordoned = cordoned;
    if (changed) this.emit('cordon', host, cordoned);
  }

  has(host: string): boolean {
    return this.hosts.has(host);
  }

  require(host: string): HostEntry {
    const e = this.hosts.get(host);
    if (!e) throw new FerryError(ErrorCode.NOT_FOUND, `no host named ${host}`);
    return e;
  }

  isAlive(host: string): boolean {
    return this.hosts.get(host)?.state === 'alive';
  }

  /** The host's public seal key; FAILED_PRECONDITION when its agent registered none (secrets are never sent in clear). */
  sealKeyOf(host: string): Uint8Array {
    const key = this.require(host).sealKey;
    if (!key) throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${host}'s agent registered no seal key: a migration's key cannot be sent to it sealed`);
    return key;
  }

  describe(host: string): HostInfo {
    const e = this.require(host);
    return {
      name: e.name,
      state: e.state,
      cordoned: e.cordoned,
      address: e.address,
      criu: e.criu,
      memory: e.memory,
      workloadCount: e.workloads.filter((w) => w.state !== 'exited').length,
      lastHeartbeatAt: e.lastHeartbeatAt ? new Date(e.lastHeartbeatAt).toISOString() : '',
      ...(e.bootId ? { bootId: e.bootId } : {}),
    };
  }

  list(): HostInfo[] {
    return [...this.hosts.keys()].sort(compareHostNames).map((h) => this.describe(h));
  }

  /**
   * Every workload, one row per name. During a migration both copies are briefly reported (the
   * frozen source and the restored target); the running one is shown.
   */
  workloads(): WorkloadInfo[] {
    const byName = new Map<string, WorkloadInfo>();
    for (const e of this.hosts.values()) {
      for (const w of e.workloads) {
        const seen = byName.get(w.name);
        if (!seen || rank(w) > rank(seen)) byName.set(w.name, w);
      }
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  findWorkload(name: string): WorkloadInfo | undefined {
    // One pass without building the whole sorted list: this runs for every migration and drain step.
    let found: WorkloadInfo | undefined;
    for (const e of this.hosts.values()) {
      for (const w of e.workloads) if (w.name === name && (!found || rank(w) > rank(found))) found = w;
    }
    return found;
  }

  /**
   * The hosts that report `name` running, in name order. More than one means one of them is
   * lying (a compromised agent listing a workload of another host's name on its own host):
   * acting on `name` would pick either, so migrate and drain refuse (ambiguousWorkload).
   */
  hostsRunning(name: string): string[] {
    const hosts: string[] = [];
    for (const e of this.hosts.values()) if (e.workloads.some((w) => w.name === name && w.state === 'running')) hosts.push(e.name);
    return hosts.sort(compareHostNames);
  }

  /** CONFLICT naming the hosts when more than one reports `name` running, else null. */
  ambiguousWorkload(name: string): FerryError | null {
    const hosts = this.hostsRunning(name);
    if (hosts.length < 2) return null;
    return new FerryError(
      ErrorCode.CONFLICT,
      `workload ${name} is reported running on ${hosts.length} hosts (${hosts.join(', ')}): one of them is not the real one, so none is acted on; stop the impostor or cordon its host`,
      { details: hosts },
    );
  }

  /** State of `name` on `host` as the registry shows it now (undefined: not there). */
  stateOn(host: string, name: string): WorkloadInfo['state'] | undefined {
    return this.hosts.get(host)?.workloads.find((w) => w.name === name)?.state;
  }

  /** Workloads on one host that are not exited (what a drain must move). */
  workloadsOn(host: string): WorkloadInfo[] {
    return (this.hosts.get(host)?.workloads ?? []).filter((w) => w.state !== 'exited');
  }

  /** A snapshot of every host as placement sees it, with the migrations already heading there. */
  placementView(slots: MigrationSlots): PlacementHost[] {
    const out: PlacementHost[] = [];
    for (const e of this.hosts.values()) {
      const inc = slots.incoming(e.name);
      let count = 0;
      for (const w of e.workloads) if (w.state !== 'exited') count++;
      out.push({
        name: e.name,
        alive: e.state === 'alive',
        cordoned: e.cordoned,
        criuUsable: e.criu.usable,
        availableBytes: e.memory.availableBytes,
        workloadCount: count,
        incoming: inc.count,
        incomingBytes: inc.bytes,
      });
    }
    return out;
  }

  /** Applies a finished migration at once, without waiting for the next heartbeats. */
  moveWorkload(name: string, from: string, to: string, pid: number, known?: WorkloadInfo): void {
    const src = this.hosts.get(from);
    const dst = this.hosts.get(to);
    // The source's list may already lack it (a heartbeat sent after the release); what the
    // migration started from stands in then.
    const moved = src?.workloads.find((w) => w.name === name) ?? known;
    if (src) src.workloads = src.workloads.filter((w) => w.name !== name);
    if (dst && moved) {
      const entry: WorkloadInfo = { ...moved, host: to, pid, state: 'running' };
      dst.workloads = [...dst.workloads.filter((w) => w.name !== name), entry];
      this.recentMoves.set(name, { from, to, entry, until: this.now() + RECENT_MOVE_MS });
    }
  }

  /**
   * A heartbeat taken before a migration finished, arriving after it, must not undo the move the
   * coordinator applied: the target's would drop the workload, the source's would bring back its
   * frozen copy. Until the target reports the workload itself (or the move is old), the move wins.
   */
  private withRecentMoves(host: string, workloads: WorkloadInfo[]): WorkloadInfo[] {
    if (this.recentMoves.size === 0 && this.recentRemovals.size === 0) return workloads;
    const now = this.now();
    let out = workloads;
    // Likewise a list taken before a stop must not bring the stopped workload back (same pid:
    // a new workload of that name is another process).
    for (const [key, rm] of this.recentRemovals) {
      if (rm.until < now) this.recentRemovals.delete(key);
      else if (rm.host === host) out = out.filter((w) => !(w.name === rm.name && w.pid === rm.pid));
    }
    for (const [name, mv] of this.recentMoves) {
      if (mv.until < now) {
        this.recentMoves.delete(name);
        continue;
      }
      if (host === mv.to) {
        // Stopped there since: the removal above has the say on this host.
        if (mv.stopped) continue;
        if (out.some((w) => w.name === name && w.pid === mv.entry.pid)) this.recentMoves.delete(name);
        else out = [...out.filter((w) => w.name !== name), mv.entry];
      } else if (host === mv.from) {
        out = out.filter((w) => w.name !== name);
      }
    }
    return out;
  }

  /** Records a workload the coordinator just had started, before its host's next heartbeat. */
  addWorkload(w: WorkloadInfo): void {
    const e = this.hosts.get(w.host);
    if (e) e.workloads = [...e.workloads.filter((x) => x.name !== w.name), w];
  }

  /** Applies a state change the coordinator caused (freeze, thaw) before the host's next heartbeat says so. */
  setWorkloadState(host: string, name: string, state: WorkloadInfo['state']): void {
    const e = this.hosts.get(host);
    if (e) e.workloads = e.workloads.map((w) => (w.name === name ? { ...w, state } : w));
  }

  removeWorkload(host: string, name: string): void {
    const e = this.hosts.get(host);
    if (!e) return;
    const gone = e.workloads.find((w) => w.name === name);
    e.workloads = e.workloads.filter((w) => w.name !== name);
    if (gone) this.recentRemovals.set(`${host}/${name}`, { host, name, pid: gone.pid, until: this.now() + RECENT_MOVE_MS });
    // A migration onto this host just before must not bring it back either (it still keeps the
    // source's late lists from bringing back the frozen copy).
    const mv = this.recentMoves.get(name);
    if (mv?.to === host) mv.stopped = true;
  }
}

function rank(w: WorkloadInfo): number {
  return w.state === 'running' ? 2 : w.state === 'frozen' ? 1 : 0;
}

/** h2 before h10. */
function compareHostNames(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}
