/**
 * An OpenSSH server in each agent host, for bootstrapping agents over SSH (`ferry dev up --ssh`,
 * the bootstrap test): like the storage host's, with keys made fresh by each `up`. Each host gets
 * its own host key, so a client pinning one host's key is refused by another; one client key
 * (root's authorized key on every host) and one known_hosts file listing them all.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ClusterLayout, HostLayout } from './cluster-layout';
import { SSHD_BINARY, SSHD_PRIVSEP_DIR, keygen, knownHostsLine, sshdConfigText } from './sshd-config';

/** The client side of the hosts' SSH servers: all derived from the layout. */
export interface HostSshFiles {
  dir: string;
  /** Private key root logs in with (its .pub is authorized on every host). */
  clientKey: string;
  /** known_hosts listing every agent host's address and host key. */
  knownHosts: string;
}

/** Where a cluster keeps the hosts' SSH keys and configs (whether or not they exist yet). */
export function hostSshFiles(layout: ClusterLayout): HostSshFiles {
  const dir = path.join(layout.sshDir, 'hosts');
  return { dir, clientKey: path.join(dir, 'id_ed25519'), knownHosts: path.join(dir, 'known_hosts') };
}

function hostKeyFile(files: HostSshFiles, host: HostLayout): string {
  return path.join(files.dir, `ssh_host_ed25519_key.${host.name}`);
}

function sshdConfigFile(files: HostSshFiles, host: HostLayout): string {
  return path.join(files.dir, `sshd_config.${host.name}`);
}

/** Generates the client key, one host key and sshd_config per host, authorized_keys and known_hosts. */
export async function prepareHostSshd(layout: ClusterLayout, hosts: HostLayout[]): Promise<HostSshFiles> {
  const files = hostSshFiles(layout);
  fs.mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(SSHD_PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  await keygen(files.clientKey, `ferry-dev-${layout.name}-bootstrap`);
  const authorizedKeys = path.join(files.dir, 'authorized_keys');
  fs.writeFileSync(authorizedKeys, fs.readFileSync(`${files.clientKey}.pub`), { mode: 0o600 });
  const known: string[] = [];
  for (const host of hosts) {
    const hostKey = hostKeyFile(files, host);
    await keygen(hostKey, `ferry-dev-${layout.name}-${host.name}`);
    known.push(knownHostsLine(host.address, hostKey));
    fs.writeFileSync(sshdConfigFile(files, host), sshdConfigText(host.address, hostKey, authorizedKeys), { mode: 0o600 });
  }
  fs.writeFileSync(files.knownHosts, `${known.join('\n')}\n`, { mode: 0o600 });
  return files;
}

/** sshd for one host, in the foreground (-D), logging to stderr (-e). */
export function hostSshdArgv(layout: ClusterLayout, host: HostLayout): string[] {
  return [SSHD_BINARY, '-D', '-e', '-f', sshdConfigFile(hostSshFiles(layout), host)];
}
