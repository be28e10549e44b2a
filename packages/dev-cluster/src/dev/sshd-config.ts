/** The pieces every dev-cluster OpenSSH server shares: key generation and one sshd_config shape. */
import * as fs from 'node:fs';
import { runCommand } from './run-command';

export const SSHD_BINARY = '/usr/sbin/sshd';
/** sshd's privilege-separation directory; it refuses to start without it. */
export const SSHD_PRIVSEP_DIR = '/run/sshd';

/** A fresh ed25519 key pair at `file` (+ .pub), replacing any earlier one. */
export async function keygen(file: string, comment: string): Promise<void> {
  fs.rmSync(file, { force: true });
  fs.rmSync(`${file}.pub`, { force: true });
  await runCommand('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

/** `<address> <type> <key>`: the known_hosts line that pins the host key at `hostKeyFile`. */
export function knownHostsLine(address: string, hostKeyFile: string): string {
  return `${address} ${fs.readFileSync(`${hostKeyFile}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ')}`;
}

/** Key-only root login on one address, SFTP in-process, no PAM, no pid file (we track the pid). */
export function sshdConfigText(listenAddress: string, hostKey: string, authorizedKeys: string): string {
  return [
    `ListenAddress ${listenAddress}`,
    'Port 22',
    `HostKey ${hostKey}`,
    `AuthorizedKeysFile ${authorizedKeys}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // The key files live under /run/ferry, whose modes sshd's StrictModes would question.
    'StrictModes no',
    'Subsystem sftp internal-sftp',
    'PidFile none',
    'LogLevel VERBOSE',
    '',
  ].join('\n');
}
