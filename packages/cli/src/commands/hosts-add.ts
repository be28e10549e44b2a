import type { Command } from 'commander';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { bootstrapAgent, DEFAULT_BOOTSTRAP_STATE_DIR, DEFAULT_CONFIG_DIR, DEFAULT_INSTALL_PREFIX, findBundleRoot, parseSshTarget, type HostKeyPolicy } from '../bootstrap';
import { resolveNatsCredentials, resolveNatsUrl, waitForHosts } from '../client';
import { printJson } from '../output';
import { action } from './action';

/** Options of `ferry hosts add` (and `hosts remove`) naming the host key policy. */
export interface HostKeyFlags {
  knownHosts?: string;
  fingerprint?: string;
}

/** The host key policy the flags ask for: a pinned fingerprint, or a known_hosts file (default ~/.ssh/known_hosts). */
export function hostKeyPolicyFromFlags(flags: HostKeyFlags, homeDir: string): HostKeyPolicy {
  if (flags.knownHosts !== undefined && flags.fingerprint !== undefined) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, 'give either --known-hosts or --fingerprint, not both');
  }
  if (flags.fingerprint !== undefined) return { kind: 'fingerprint', fingerprint: flags.fingerprint };
  return { kind: 'known-hosts', file: flags.knownHosts ?? `${homeDir}/.ssh/known_hosts` };
}

function collectEnv(value: string, previous: Record<string, string>): Record<string, string> {
  const i = value.indexOf('=');
  if (i <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--env must be NAME=VALUE, got '${value}'`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

interface HostsAddFlags extends HostKeyFlags {
  ssh: string;
  key?: string;
  natsUrl?: string;
  address?: string;
  prefix: string;
  configDir: string;
  dataDir: string;
  workDir: string;
  serviceManager: 'auto' | 'systemd' | 'process';
  env: Record<string, string>;
  logLevel: string;
  stateDir: string;
  timeout: number;
  json?: boolean;
}

export function registerHostsAdd(hosts: Command): Command {
  return hosts
    .command('add')
    .description('install an agent on a host over SSH (host key verified), start it under systemd or a supervisor, and wait until it registers')
    .argument('<name>', 'the host name the agent registers as (FERRY_HOST)')
    .requiredOption('--ssh <user@addr[:port]>', 'where to connect; the user must be root')
    .option('--key <file>', 'private key for SSH authentication', `${process.env.HOME ?? '/root'}/.ssh/id_ed25519`)
    .option('--known-hosts <file>', 'known_hosts file the host key must be listed in (default ~/.ssh/known_hosts)')
    .option('--fingerprint <SHA256:...>', 'accept only this host key fingerprint (as `ssh-keygen -lf` prints it) instead of known_hosts')
    .option('--nats-url <url>', 'NATS as the host reaches it (default: the URL this CLI uses)')
    .option('--address <addr>', "the host's address for FERRY_ADDRESS (default: the SSH address)")
    .option('--prefix <dir>', 'install directory on the host', DEFAULT_INSTALL_PREFIX)
    .option('--config-dir <dir>', 'directory of agent.env on the host', DEFAULT_CONFIG_DIR)
    .option('--data-dir <dir>', "the agent's FERRY_DATA_DIR on the host", '/var/lib/ferry')
    .option('--work-dir <dir>', "the agent's FERRY_WORK_DIR on the host (tmpfs preferred)", '/run/ferry/work')
    .option('--service-manager <auto|systemd|process>', 'how to run the agent: auto = systemd where it is PID 1, else a supervised process', 'auto')
    .option('--env <NAME=VALUE>', 'extra FERRY_* variable for the agent (repeatable)', collectEnv, {})
    .option('--log-level <level>', "the agent's log level", 'info')
    .option('--state-dir <dir>', 'where this CLI remembers bootstrapped hosts (for `hosts remove`)', DEFAULT_BOOTSTRAP_STATE_DIR)
    .option('--timeout <ms>', 'how long to wait for the agent to register', (v) => Number(v), 60_000)
    .option('--json', 'print {name, ssh, serviceManager, prefix, kernel, criu, bundleBytes, elapsedMs}')
    .action(
      action(async (name: string, flags: HostsAddFlags) => {
        if (!['auto', 'systemd', 'process'].includes(flags.serviceManager)) {
          throw new FerryError(ErrorCode.INVALID_ARGUMENT, `--service-manager must be auto, systemd or process, got '${flags.serviceManager}'`);
        }
        if (!Number.isInteger(flags.timeout) || flags.timeout <= 0) throw new FerryError(ErrorCode.INVALID_ARGUMENT, '--timeout must be a positive number of ms');
        const cliNatsUrl = resolveNatsUrl();
        const result = await bootstrapAgent({
          name,
          ssh: parseSshTarget(flags.ssh),
          privateKeyFile: flags.key as string,
          hostKey: hostKeyPolicyFromFlags(flags, process.env.HOME ?? '/root'),
          natsUrl: flags.natsUrl ?? cliNatsUrl,
          address: flags.address,
          prefix: flags.prefix,
          configDir: flags.configDir,
          dataDir: flags.dataDir,
          workDir: flags.workDir,
          serviceManager: flags.serviceManager,
          extraEnv: flags.env,
          logLevel: flags.logLevel,
          repoRoot: findBundleRoot(__dirname),
          stateDir: flags.stateDir,
          registerTimeoutMs: flags.timeout,
          waitUntilRegistered: (host, timeoutMs) => waitForHosts(cliNatsUrl, [host], timeoutMs, resolveNatsCredentials()),
          report: flags.json ? undefined : (line) => process.stderr.write(`ferry: ${line}\n`),
        });
        if (flags.json) {
          return printJson({
            name: result.name,
            ssh: result.ssh,
            serviceManager: result.serviceManager,
            prefix: result.prefix,
            kernel: result.facts.kernel,
            criu: result.facts.criuVersion,
            bundleBytes: result.bundleBytes,
            elapsedMs: result.elapsedMs,
          });
        }
        process.stdout.write(`${result.name} added (${result.serviceManager}, ${result.prefix}) in ${(result.elapsedMs / 1000).toFixed(1)} s\n`);
      }),
    );
}
