/**
 * Per-migration work dirs on tmpfs. Images live in memory (they are written once, read once and
 * deleted) and the dirs are 0700 because they hold a workload's whole memory.
 */
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError, isValidToken } from '@ferry/protocol';

export interface MountFunction {
  (source: string, target: string, fstype: string, flags: number, data: string | null): Promise<void>;
}

/** Mount point of the filesystem holding `dir`, and its type, from /proc/self/mountinfo. */
export async function filesystemOf(dir: string): Promise<{ mountPoint: string; fsType: string }> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  let best = { mountPoint: '/', fsType: '' };
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const mountPoint = left.split(' ')[4].replace(/\\040/g, ' ');
    const fsType = right.split(' ')[0];
    const inside = dir === mountPoint || dir.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`);
    // Later lines shadow earlier mounts at the same point, so >= keeps the newest.
    if (inside && mountPoint.length >= best.mountPoint.length) best = { mountPoint, fsType };
  }
  return best;
}

export class WorkDirs {
  constructor(readonly root: string) {}

  /** Makes the root a tmpfs unless it already is one (mounted in the agent's own mount namespace). */
  async prepare(mount: MountFunction, sizeBytes: number): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const fs = await filesystemOf(this.root);
    if (!(fs.fsType === 'tmpfs' && fs.mountPoint === this.root)) {
      await mount('ferry-work', this.root, 'tmpfs', 0, `mode=0700,size=${sizeBytes}`);
    }
    await chmod(this.root, 0o700);
  }

  pathFor(migrationId: string): string {
    if (!isValidToken(migrationId)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid migration id ${migrationId}`);
    return join(this.root, migrationId);
  }

  /**
   * Where a migration's page-server TLS credentials live: beside its images dir, not in it (the
   * image stream sends every file of that dir), and removed with it.
   */
  tlsPathFor(migrationId: string): string {
    return `${this.pathFor(migrationId)}.tls`;
  }

  /**
   * Post-copy, source side: where a migration's lazy memory (the original pagemap and pages
   * images) waits for the target's requests. Beside the images dir so the stream leaves it out,
   * on the same tmpfs so moving the pages there is a rename.
   */
  lazyPathFor(migrationId: string): string {
    return `${this.pathFor(migrationId)}.lazy`;
  }

  /**
   * Local dirs (migration/local-dir-copy.ts): the source's tar snapshot files, the target's
   * extraction logs. Beside the images dir so the stream leaves it out.
   */
  localPathFor(migrationId: string): string {
    return `${this.pathFor(migrationId)}.local`;
  }

  async create(migrationId: string): Promise<string> {
    const dir = this.pathFor(migrationId);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  async remove(migrationId: string): Promise<void> {
    await rm(this.pathFor(migrationId), { recursive: true, force: true });
    await rm(this.tlsPathFor(migrationId), { recursive: true, force: true });
    await rm(this.lazyPathFor(migrationId), { recursive: true, force: true });
    await rm(this.localPathFor(migrationId), { recursive: true, force: true });
  }
}

/** Where this host keeps isolated workloads' root skeletons (isolated-root.ts): beside the migrations, never shared between hosts. */
export function rootsDirOf(workDirs: Pick<WorkDirs, 'root'>): string {
  return join(workDirs.root, 'roots');
}
