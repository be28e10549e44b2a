import * as fs from 'node:fs';
import { ClusterLayout, HostLayout } from './cluster-layout';
import { isMountPoint, unmountAll } from './mounts';
import { runCommand } from './run-command';

/**
 * Makes the directory that holds mount/UTS namespace bind files: bind-mounted onto itself and
 * private, because `unshare --mount=FILE` refuses a FILE on a shared mount (the namespace would
 * propagate into itself).
 */
export async function createNamespaceDir(layout: ClusterLayout): Promise<void> {
  fs.mkdirSync(layout.namespaceDir, { recursive: true });
  if (!isMountPoint(layout.namespaceDir)) {
    await runCommand('mount', ['--bind', layout.namespaceDir, layout.namespaceDir]);
  }
  await runCommand('mount', ['--make-private', layout.namespaceDir]);
}

/**
 * Creates a host's mount and UTS namespaces, kept alive by bind files rather than a process.
 * Propagation slave: the machine's later mounts still appear inside the host, while mounts made
 * inside (e.g. an agent's sshfs) stay there. The hostname is the host's name.
 */
export async function createHostMountAndUts(host: HostLayout): Promise<void> {
  // unshare bind-mounts onto these paths, so they must exist first.
  fs.writeFileSync(host.mountNsFile, '');
  fs.writeFileSync(host.utsNsFile, '');
  await runCommand('unshare', [
    `--mount=${host.mountNsFile}`,
    `--uts=${host.utsNsFile}`,
    '--propagation',
    'slave',
    'hostname',
    host.name,
  ]);
}

/** Each agent host's own local disk: a path that, unlike the rest of the machine's filesystem, hosts do not share. */
export const HOST_LOCAL_DISK = '/srv';

/**
 * Gives a host a private /srv: a tmpfs mounted there inside its mount namespace, so what one host
 * writes under /srv the others (and the machine) do not see, as on separate machines; every other
 * path stays shared. Mounted through the bind file, so no process needs to live in the host; it
 * goes away with the namespace (the propagation is slave: it never appears in the root namespace).
 */
export async function mountHostLocalDisk(host: HostLayout): Promise<void> {
  // The mount point must exist on the machine's filesystem, which the host's namespace sees too.
  fs.mkdirSync(HOST_LOCAL_DISK, { recursive: true, mode: 0o755 });
  await runCommand('nsenter', [`--mount=${host.mountNsFile}`, '--', 'mount', '-t', 'tmpfs', '-o', 'mode=0755', `ferry-${host.name}-local`, HOST_LOCAL_DISK]);
}

/**
 * Drops a host's mount/UTS bind files. Lazy unmount: the namespace itself (and everything mounted
 * inside it) goes away once no process and no bind holds it.
 */
export async function deleteHostMountAndUts(host: HostLayout): Promise<void> {
  for (const file of [host.mountNsFile, host.utsNsFile]) {
    await unmountAll(file);
    fs.rmSync(file, { force: true });
  }
}

/** Unmounts and removes the namespace directory (after the hosts' bind files are gone). */
export async function deleteNamespaceDir(layout: ClusterLayout): Promise<void> {
  await unmountAll(layout.namespaceDir);
  fs.rmSync(layout.namespaceDir, { recursive: true, force: true });
}
