/**
 * This host's workloads: launching, stopping, listing, and the shared filesystems and service
 * addresses they use. The migration halves (migration/) adopt and release workloads through the
 * same inventory.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ErrorCode, FerryError, silentLogger, type Logger, type MountSpec, type RunRequest, type WorkloadInfo, type WorkloadUser } from '@ferry/protocol';
import type { AgentMetrics } from '../agent-metrics';
import type { CriuDriver } from '../criu/criu-driver';
import { isAlive, treeRssBytes } from '../host/process-tree';
import { addServiceAddress, announceServiceAddress, ipOf, removeServiceAddress } from '../host/service-address';
import { makeWorkloadLink, workloadLinkName } from '../host/workload-network';
import { ensureMounted, unmount, type UnmountSyscalls } from '../host/shared-mounts';
import { isolatedRootPlan, makeRootSkeleton, removeRootSkeleton, resolveWorkloadUser, visibleInIsolatedRoot, type IsolatedRootPlan } from '../host/isolated-root';
import { launchWorkload } from '../host/workload-launcher';
import { checkLocalDirs, DEFAULT_LOCAL_DIR_ROOTS, ensureLocalDirs } from '../host/local-dirs';
import { hasOwnRoot, linkOf, type Inventory, type WorkloadRecord } from './inventory';

export interface WorkloadsOptions {
  /** This host's name, as workloads report it. */
  host: string;
  /** The host's registered address: service addresses go on the interface holding it. */
  address: string;
  /** Workload logs live under `<dataDir>/workloads/<name>/`, the same path on every host. */
  dataDir: string;
  /** Where workloads' local dirs may be (host/local-dirs.ts); default DEFAULT_LOCAL_DIR_ROOTS. */
  localDirRoots?: string[];
  /** Where isolated workloads' root skeletons live (isolated-root.ts): this host's own, never shared. */
  rootsDir: string;
}

/** The root skeleton of an isolated workload on this host. */
export function workloadRootDir(rootsDir: string, name: string): string {
  return join(rootsDir, name);
}

/** Where a workload's output goes: the same path on every host, so a restored workload finds its log. */
export function workloadLogPath(dataDir: string, name: string): string {
  return join(dataDir, 'workloads', name, 'output.log');
}

export class Workloads {
  private readonly log: Logger;

  constructor(
    private readonly opts: WorkloadsOptions,
    readonly inventory: Inventory,
    private readonly criu: Pick<CriuDriver, 'kill'>,
    private readonly sys: UnmountSyscalls,
    logger: Logger = silentLogger,
    private readonly metrics?: AgentMetrics,
  ) {
    this.log = logger;
  }

  /** Marks workloads whose root process is gone as exited. */
  async refresh(): Promise<void> {
    for (const rec of this.inventory.all()) {
      if (rec.state !== 'exited' && !(await isAlive(rec.pid, rec.startTime))) {
        rec.state = 'exited';
        await this.inventory.put(rec);
        this.log.info({ workload: rec.name, pid: rec.pid }, 'workload exited');
      }
    }
  }

  async list(): Promise<WorkloadInfo[]> {
    await this.refresh();
    const out: WorkloadInfo[] = [];
    for (const r of this.inventory.all()) out.push(await this.describe(r));
    this.metrics?.inventory(out);
    return out;
  }

  async describe(r: WorkloadRecord): Promise<WorkloadInfo> {
    return {
      name: r.name,
      host: this.opts.host,
      state: r.state,
      pid: r.pid,
      rssBytes: r.state === 'exited' ? 0 : await treeRssBytes(r.pid).catch(() => 0),
      argv: r.argv,
      startedAt: r.startedAt,
      exitCode: r.exitCode,
      mounts: r.mounts ?? [],
      ...(r.address ? { address: r.address } : {}),
      localDirs: r.localDirs ?? [],
      ...(r.user ? { user: r.user } : {}),
      ...(hasOwnRoot(r) ? { ownRoot: true } : {}),
      ...(r.ownNetwork ? { ownNetwork: true } : {}),
    };
  }

  /** The workload named `name`, else NOT_FOUND. */
  require(name: string): WorkloadRecord {
    const rec = this.inventory.get(name);
    if (!rec) throw new FerryError(ErrorCode.NOT_FOUND, `no workload named ${name} on ${this.opts.host}`);
    return rec;
  }

  async run(req: RunRequest): Promise<WorkloadInfo> {
    const existing = this.inventory.get(req.name);
    if (existing && existing.state !== 'exited') {
      throw new FerryError(ErrorCode.CONFLICT, `workload ${req.name} already runs on ${this.opts.host}`);
    }
    const localDirs = req.localDirs ?? [];
    checkLocalDirs(localDirs, this.opts.localDirRoots ?? DEFAULT_LOCAL_DIR_ROOTS);
    if (req.hostRoot && req.user !== undefined) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, '--host-root and --user do not go together: a workload run as another user always has a root of its own');
    }
    const user = req.user !== undefined ? await resolveWorkloadUser(req.user) : undefined;
    const logPath = workloadLogPath(this.opts.dataDir, req.name);
    const cwd = req.cwd ?? '/';
    // Its own mount namespace, /proc and root, built from this host's plan (isolated-root.ts); as
    // another user, in a user namespace of its own too. `--host-root`: the agent's. Checked before
    // anything is set up on the host (an address, a mount) that a refusal would have to undo.
    let isolated: { plan: IsolatedRootPlan; user?: WorkloadUser } | undefined;
    if (user !== undefined || !req.hostRoot) {
      const plan = await isolatedRootPlan(workloadRootDir(this.opts.rootsDir, req.name), logPath, { mounts: req.mounts.map((m) => m.path), userNamespace: user !== undefined });
      if (!visibleInIsolatedRoot(plan, cwd)) {
        throw new FerryError(
          ErrorCode.INVALID_ARGUMENT,
          `its working directory ${cwd} would not exist in its own root; use one under ${plan.binds.filter((b) => b.kind === 'dir').map((b) => b.path).join(', ')}${user ? '' : ', or run it with --host-root'}`,
        );
      }
      isolated = { plan, ...(user ? { user } : {}) };
    }
    await ensureLocalDirs(localDirs, user);
    await mkdir(dirname(logPath), { recursive: true, mode: 0o700 });
    // A new workload starts a new log, even if an earlier one of the same name left one.
    await writeFile(logPath, '', { mode: 0o600 });
    await this.mountAll(req.mounts);
    // Run as another user with an address: a network namespace of its own, so its connections move
    // (workload-network.ts); the address is then its, reached through its link.
    const address = req.address;
    const link = address !== undefined && user !== undefined ? workloadLinkName(req.name) : undefined;
    if (address !== undefined && link === undefined) {
      await addServiceAddress(address, this.opts.address);
      await announceServiceAddress(address, this.opts.address);
    }
    if (isolated) await makeRootSkeleton(isolated.plan);
    let launched: Awaited<ReturnType<typeof launchWorkload>>;
    try {
      const network = address !== undefined && link !== undefined
        ? async (pid: number) => {
            await makeWorkloadLink(pid, req.name, ipOf(address));
            await addServiceAddress(address, this.opts.address, link);
          }
        : undefined;
      launched = await launchWorkload({ name: req.name, argv: req.argv, env: req.env, cwd, logPath, ...(isolated ? { isolated: { ...isolated, ...(network ? { network } : {}) } } : {}) });
    } catch (err) {
      if (address !== undefined) await removeServiceAddress(address, this.opts.address, link).catch(() => undefined);
      if (isolated) await removeRootSkeleton(isolated.plan.rootDir);
      throw err;
    }
    // Behind its link the address is reachable only now. A failed announcement costs the peers an
    // ARP entry's expiry, not the workload (which runs already).
    if (address !== undefined && link !== undefined) {
      await announceServiceAddress(address, this.opts.address, link).catch((err: unknown) =>
        this.log.warn({ workload: req.name, err: (err as Error).message }, 'gratuitous ARP failed; peers re-learn the address when their ARP entry expires'),
      );
    }
    const rec: WorkloadRecord = {
      name: req.name,
      pid: launched.pid,
      startTime: launched.startTime,
      argv: req.argv,
      env: req.env,
      cwd,
      logPath,
      state: 'running',
      startedAt: new Date().toISOString(),
      exitCode: null,
      migration: null,
      mounts: req.mounts,
      ...(req.address ? { address: req.address } : {}),
      ...(localDirs.length > 0 ? { localDirs } : {}),
      ...(isolated?.user ? { user: isolated.user } : {}),
      ...(isolated ? { ownRoot: true } : {}),
      ...(link ? { ownNetwork: true } : {}),
    };
    await this.inventory.put(rec);
    this.log.info({ workload: req.name, pid: launched.pid, address: req.address }, 'workload launched');
    return this.describe(rec);
  }

  async stop(name: string): Promise<void> {
    const rec = this.require(name);
    if (rec.migration) throw new FerryError(ErrorCode.CONFLICT, `workload ${name} is being migrated (${rec.migration.id})`);
    if (await isAlive(rec.pid, rec.startTime)) await this.criu.kill(rec.pid);
    if (rec.address) await removeServiceAddress(rec.address, this.opts.address, linkOf(rec));
    if (hasOwnRoot(rec)) await removeRootSkeleton(workloadRootDir(this.opts.rootsDir, rec.name));
    await this.inventory.remove(name);
    this.log.info({ workload: name }, 'workload stopped');
  }

  /** Mounts each filesystem unless already there; returns the paths this call mounted. */
  async mountAll(mounts: MountSpec[]): Promise<string[]> {
    const made: string[] = [];
    for (const spec of mounts) {
      const { mounted } = await ensureMounted(spec);
      if (mounted) {
        made.push(spec.path);
        await this.inventory.setOwnedMount(spec.path, true);
        this.log.info({ fs: spec.name, path: spec.path }, 'mounted shared filesystem');
      }
    }
    return made;
  }

  /** Unmounts the given mount points we mounted ourselves once no workload of ours uses them. */
  async unmountUnused(paths: string[], except?: string): Promise<void> {
    for (const path of paths) {
      if (!this.inventory.isOwnedMount(path) || this.inventory.mountInUse(path, except)) continue;
      try {
        await unmount(path, this.sys);
        await this.inventory.setOwnedMount(path, false);
        this.log.info({ path }, 'unmounted unused shared filesystem');
      } catch (err) {
        this.log.warn({ path, err: (err as Error).message }, 'could not unmount');
      }
    }
  }
}
