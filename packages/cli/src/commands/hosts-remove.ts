import type { Command } from 'commander';
import { CoordVerb, ErrorCode, FerryError } from '@ferry/protocol';
import { DEFAULT_BOOTSTRAP_STATE_DIR, parseSshTarget, removeBootstrappedAgent } from '../bootstrap';
import { askCoordinator } from '../client';
import { printJson } from '../output';
import { action } from './action';
import { hostKeyPolicyFromFlags, type HostKeyFlags } from './hosts-add';

interface HostsRemoveFlags extends HostKeyFlags {
  ssh?: string;
  key?: string;
  stateDir: string;
  force?: boolean;
  json?: boolean;
}

export function registerHostsRemove(hosts: Command): Command {
  return hosts
    .command('remove')
    .description('stop the agent `hosts add` installed on a host and remove its files (workloads there must be drained first)')
    .argument('<name>', 'the host name given to `hosts add`')
    .option('--ssh <user@addr[:port]>', 'connect here instead of the recorded address')
    .option('--key <file>', 'private key instead of the recorded one')
    .option('--known-hosts <file>', 'known_hosts file instead of the recorded host key policy')
    .option('--fingerprint <SHA256:...>', 'pinned host key fingerprint instead of the recorded policy')
    .option('--state-dir <dir>', 'where `hosts add` recorded the host', DEFAULT_BOOTSTRAP_STATE_DIR)
    .option('--force', 'remove even if the coordinator lists workloads on the host, or cannot be asked')
    .option('--json', 'print {removed: NAME, prefix}')
    .action(
      action(async (name: string, flags: HostsRemoveFlags) => {
        if (!flags.force) {
          // Removing an agent leaves its workloads running but unmanaged: refuse unless drained.
          const { hosts } = await askCoordinator(CoordVerb.HOSTS, {});
          const host = hosts.find((h) => h.name === name);
          if (host !== undefined && host.workloadCount > 0) {
            throw new FerryError(
              ErrorCode.FAILED_PRECONDITION,
              `${name} still runs ${host.workloadCount} workload(s); \`ferry drain ${name}\` first (or --force to leave them unmanaged)`,
            );
          }
        }
        const policyGiven = flags.knownHosts !== undefined || flags.fingerprint !== undefined;
        const record = await removeBootstrappedAgent({
          name,
          stateDir: flags.stateDir,
          ssh: flags.ssh === undefined ? undefined : parseSshTarget(flags.ssh),
          privateKeyFile: flags.key,
          hostKey: policyGiven ? hostKeyPolicyFromFlags(flags, process.env.HOME ?? '/root') : undefined,
          report: flags.json ? undefined : (line) => process.stderr.write(`ferry: ${line}\n`),
        });
        if (flags.json) return printJson({ removed: name, prefix: record.prefix });
        process.stdout.write(`${name} removed (agent stopped, ${record.prefix} deleted)\n`);
      }),
    );
}
