/**
 * The dev cluster's storage host: OpenSSH's sshd in its own namespace host, exporting a directory
 * that agents mount with sshfs as the cluster filesystem `shared`. Keys are made fresh by each `up`
 * and the client pins the server's host key (known_hosts, StrictHostKeyChecking=yes).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ClusterLayout } from './cluster-layout';
import { SSHD_BINARY, SSHD_PRIVSEP_DIR, keygen, knownHostsLine, sshdConfigText } from './sshd-config';

/** A filesystem as ferry's cluster configuration describes it (see the coordinator's filesystems option). */
export interface DevFilesystem {
  name: string;
  type: 'sshfs';
  source: string;
  options: Record<string, string>;
}

export interface StorageHostFiles {
  sshdConfig: string;
  clientKey: string;
  knownHosts: string;
  /** JSON list of the cluster's filesystems, given to the coordinator. */
  filesystemsFile: string;
  filesystems: DevFilesystem[];
}

/** Generates host and client keys, sshd_config, known_hosts and the filesystem list. */
export async function prepareStorageHost(layout: ClusterLayout): Promise<StorageHostFiles> {
  const dir = layout.sshDir;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(layout.sharedDir, { recursive: true, mode: 0o755 });
  fs.mkdirSync(SSHD_PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  const clientKey = path.join(dir, 'id_ed25519');
  for (const key of [hostKey, clientKey]) await keygen(key, `ferry-dev-${layout.name}`);
  const authorizedKeys = path.join(dir, 'authorized_keys');
  fs.writeFileSync(authorizedKeys, fs.readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const knownHosts = path.join(dir, 'known_hosts');
  fs.writeFileSync(knownHosts, `${knownHostsLine(layout.storage.address, hostKey)}\n`, { mode: 0o600 });
  const sshdConfig = path.join(dir, 'sshd_config');
  fs.writeFileSync(sshdConfig, sshdConfigText(layout.storage.address, hostKey, authorizedKeys), { mode: 0o600 });
  const filesystems: DevFilesystem[] = [
    {
      name: 'shared',
      type: 'sshfs',
      source: `root@${layout.storage.address}:${layout.sharedDir}`,
      options: { IdentityFile: clientKey, UserKnownHostsFile: knownHosts, StrictHostKeyChecking: 'yes' },
    },
  ];
  const filesystemsFile = path.join(layout.stateDir, 'filesystems.json');
  fs.writeFileSync(filesystemsFile, JSON.stringify(filesystems, null, 2));
  return { sshdConfig, clientKey, knownHosts, filesystemsFile, filesystems };
}

/** sshd in the foreground (-D), logging to stderr (-e), so our process record is sshd itself. */
export function sshdArgv(files: StorageHostFiles): string[] {
  return [SSHD_BINARY, '-D', '-e', '-f', files.sshdConfig];
}
