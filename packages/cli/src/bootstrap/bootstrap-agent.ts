/**
 * `ferry hosts add` / `ferry hosts remove` as library calls: install an agent on a host over SSH
 * (ssh2: verified host key, key authentication, SFTP), start it under systemd or a supervisor,
 * and wait until it registers with the coordinator; or stop it and remove what was installed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { buildAgentBundle } from './agent-bundle';
import {
  DEFAULT_CONFIG_DIR,
  DEFAULT_INSTALL_PREFIX,
  agentInstallLayout,
  installScript,
  removeScript,
  renderAgentEnv,
  renderAgentUnit,
  renderSupervisorScript,
  startScript,
  statusScript,
  stopScript,
  type AgentInstallLayout,
  type ServiceManager,
} from './agent-install';
import { deleteBootstrapRecord, loadBootstrapRecord, saveBootstrapRecord, type BootstrapRecord } from './bootstrap-record';
import { assertFingerprint, type HostKeyPolicy } from './host-key';
import { REMOTE_PROBE_SCRIPT, assertRemoteUsable, parseRemoteFacts, type RemoteFacts } from './remote-checks';
import { DEFAULT_SSH_CONNECT_TIMEOUT_MS, SshSession, type SshTarget } from './ssh-session';

/** Progress lines for people (the CLI prints them to stderr); silent by default. */
export type BootstrapReporter = (line: string) => void;

export interface BootstrapOptions {
  /** The agent's host name (FERRY_HOST). */
  name: string;
  ssh: SshTarget;
  privateKeyFile: string;
  hostKey: HostKeyPolicy;
  /** NATS as the remote host reaches it. */
  natsUrl: string;
  /** FERRY_ADDRESS; default the SSH address. */
  address: string;
  prefix: string;
  configDir: string;
  dataDir: string;
  workDir: string;
  logLevel: string;
  extraEnv: Record<string, string>;
  /** 'auto': systemd when the host runs it, else a supervised process. */
  serviceManager: ServiceManager | 'auto';
  /** The checkout whose built packages make the bundle. */
  repoRoot: string;
  /** Where the CLI remembers bootstrapped hosts. */
  stateDir: string;
  /** Resolves once the host registered (alive) with the coordinator; the caller supplies it. */
  waitUntilRegistered: (name: string, timeoutMs: number) => Promise<void>;
  registerTimeoutMs: number;
  connectTimeoutMs: number;
  report: BootstrapReporter;
}

/** Defaults for a real host; the caller supplies name, target, key, policy, NATS URL and the wait. */
export function defaultBootstrapOptions(): Pick<
  BootstrapOptions,
  'prefix' | 'configDir' | 'dataDir' | 'workDir' | 'logLevel' | 'extraEnv' | 'serviceManager' | 'registerTimeoutMs' | 'connectTimeoutMs' | 'report'
> {
  return {
    prefix: DEFAULT_INSTALL_PREFIX,
    configDir: DEFAULT_CONFIG_DIR,
    dataDir: '/var/lib/ferry',
    workDir: '/run/ferry/work',
    logLevel: 'info',
    extraEnv: {},
    serviceManager: 'auto',
    registerTimeoutMs: DEFAULT_REGISTER_TIMEOUT_MS,
    connectTimeoutMs: DEFAULT_SSH_CONNECT_TIMEOUT_MS,
    report: () => undefined,
  };
}

/** How long `hosts add` waits for the new agent to register (its CRIU probe runs first). */
export const DEFAULT_REGISTER_TIMEOUT_MS = 60_000;
/** Where the CLI remembers bootstrapped hosts by default (root's). */
export const DEFAULT_BOOTSTRAP_STATE_DIR = '/var/lib/ferry/cli/hosts';

export type BootstrapInput = Partial<BootstrapOptions> &
  Pick<BootstrapOptions, 'name' | 'ssh' | 'privateKeyFile' | 'hostKey' | 'natsUrl' | 'repoRoot' | 'stateDir' | 'waitUntilRegistered'>;

/** Fills defaults and validates. */
export function compileBootstrapOptions(input: BootstrapInput): BootstrapOptions {
  const options: BootstrapOptions = {
    ...defaultBootstrapOptions(),
    address: input.ssh.host,
    ...(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as BootstrapInput),
  };
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(options.name)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid host name '${options.name}' (letters, digits, . _ -; at most 63)`);
  }
  if (options.hostKey.kind === 'fingerprint') assertFingerprint(options.hostKey.fingerprint);
  for (const [what, p] of [['prefix', options.prefix], ['configDir', options.configDir], ['dataDir', options.dataDir], ['workDir', options.workDir]] as const) {
    if (!path.posix.isAbsolute(p) || p === '/' || p.includes('\n')) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${what} must be an absolute path other than /, got '${p}'`);
  }
  for (const key of Object.keys(options.extraEnv)) {
    if (!/^FERRY_[A-Z0-9_]+$/.test(key)) throw new FerryError(ErrorCode.INVALID_ARGUMENT, `extra agent variables must be FERRY_*, got ${key}`);
  }
  return options;
}

/** What a finished bootstrap reports. */
export interface BootstrapResult {
  name: string;
  ssh: SshTarget;
  serviceManager: ServiceManager;
  prefix: string;
  facts: RemoteFacts;
  bundleBytes: number;
  /** From connecting to the host registering. */
  elapsedMs: number;
}

/**
 * Installs and starts an agent on a host over SSH and waits until it registers. A host that
 * fails the checks is left untouched; a failure after the upload stops and removes what was
 * installed (the error says what happened). CONFLICT if an agent of that install already runs.
 */
export async function bootstrapAgent(input: BootstrapInput): Promise<BootstrapResult> {
  const options = compileBootstrapOptions(input);
  const started = Date.now();
  const say = options.report;
  const where = `${options.ssh.user}@${options.ssh.host}`;
  say(`connecting to ${where}:${options.ssh.port}`);
  const session = await SshSession.connect({ ...options.ssh, privateKeyFile: options.privateKeyFile, hostKey: options.hostKey, connectTimeoutMs: options.connectTimeoutMs });
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bootstrap-'));
  try {
    const facts = parseRemoteFacts(await session.run(REMOTE_PROBE_SCRIPT, 'probing the host'));
    assertRemoteUsable(where, facts);
    const manager: ServiceManager = options.serviceManager === 'auto' ? (facts.hasSystemd ? 'systemd' : 'process') : options.serviceManager;
    if (manager === 'systemd' && !facts.hasSystemd) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `${where} does not run systemd; use --service-manager process`);
    }
    say(`${where}: Linux ${facts.kernel}, criu ${facts.criuVersion}, node ${facts.nodeVersion}, ${manager === 'systemd' ? 'systemd' : 'no systemd: supervised process'}`);
    const layout = agentInstallLayout(options.prefix, options.configDir);
    if ((await session.run(statusScript(layout, manager), 'checking for a running agent')).trim() === 'running') {
      throw new FerryError(ErrorCode.CONFLICT, `an agent already runs on ${where} from ${layout.prefix}; run \`ferry hosts remove ${options.name}\` first`);
    }

    const bundle = path.join(tmpDir, 'ferry-agent.tgz');
    const { bytes } = await buildAgentBundle(options.repoRoot, bundle);
    say(`uploading the agent bundle (${(bytes / 1024 / 1024).toFixed(1)} MiB) to ${layout.prefix}`);
    const uploaded = `${layout.prefix}.upload-${process.pid}.tgz`;
    await session.run(`mkdir -p ${path.posix.dirname(uploaded)}`, 'making the install directory');
    try {
      await session.putFile(bundle, uploaded, 0o600);
      await session.run(installScript(layout, uploaded), 'unpacking the agent bundle', { timeoutMs: 120_000 });
      const nodePath = facts.nodePath as string;
      await session.writeFile(
        layout.envFile,
        renderAgentEnv({
          host: options.name,
          address: options.address,
          natsUrl: options.natsUrl,
          dataDir: options.dataDir,
          workDir: options.workDir,
          logLevel: options.logLevel,
          extraEnv: { ...(facts.criuPath ? { FERRY_CRIU_PATH: facts.criuPath } : {}), ...options.extraEnv },
        }),
        0o600,
      );
      if (manager === 'systemd') await session.writeFile(layout.unitFile, renderAgentUnit(layout, nodePath), 0o644);
      else await session.writeFile(layout.supervisorScript, renderSupervisorScript(layout, nodePath), 0o755);
      saveBootstrapRecord(options.stateDir, {
        formatVersion: 1,
        name: options.name,
        ssh: options.ssh,
        privateKeyFile: path.resolve(options.privateKeyFile),
        hostKey: options.hostKey.kind === 'known-hosts' ? { kind: 'known-hosts', file: path.resolve(options.hostKey.file) } : options.hostKey,
        prefix: options.prefix,
        configDir: options.configDir,
        serviceManager: manager,
        installedAt: new Date().toISOString(),
      });
      say(`starting the agent (${manager})`);
      await session.run(startScript(layout, manager), 'starting the agent');
      say(`waiting for ${options.name} to register`);
      await options.waitUntilRegistered(options.name, options.registerTimeoutMs).catch(async (err: unknown) => {
        const tail = await logTail(session, layout, manager);
        throw new FerryError(ErrorCode.UNAVAILABLE, `the agent on ${where} did not register as ${options.name}: ${(err as Error).message}`, {
          cause: err,
          details: tail,
        });
      });
    } catch (err) {
      say(`bootstrap failed; removing what was installed on ${where}`);
      await uninstall(session, layout, manager).catch(() => undefined);
      deleteBootstrapRecord(options.stateDir, options.name);
      throw err;
    }
    say(`${options.name} registered`);
    return { name: options.name, ssh: options.ssh, serviceManager: manager, prefix: layout.prefix, facts, bundleBytes: bytes, elapsedMs: Date.now() - started };
  } finally {
    session.close();
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

async function logTail(session: SshSession, layout: AgentInstallLayout, manager: ServiceManager): Promise<string[]> {
  const command = manager === 'systemd' ? `journalctl -u ${layout.unitName} -n 20 --no-pager` : `tail -n 20 ${layout.logFile}`;
  const result = await session.exec(command).catch(() => null);
  return result === null ? [] : result.stdout.trim().split('\n');
}

async function uninstall(session: SshSession, layout: AgentInstallLayout, manager: ServiceManager): Promise<void> {
  await session.run(stopScript(layout, manager), 'stopping the agent');
  await session.run(removeScript(layout, manager), 'removing the agent files');
}

export interface RemoveOptions {
  name: string;
  stateDir: string;
  /** Overrides the recorded SSH target, key and host key policy (e.g. the key moved). */
  ssh?: SshTarget;
  privateKeyFile?: string;
  hostKey?: HostKeyPolicy;
  connectTimeoutMs?: number;
  report?: BootstrapReporter;
}

/**
 * Stops a bootstrapped agent (its workloads keep running, like any agent stop) and removes the
 * files `hosts add` installed; the host's data dir stays. NOT_FOUND if this CLI has no record of
 * the host. Returns the record it acted on.
 */
export async function removeBootstrappedAgent(options: RemoveOptions): Promise<BootstrapRecord> {
  const record = loadBootstrapRecord(options.stateDir, options.name);
  if (record === null) {
    throw new FerryError(ErrorCode.NOT_FOUND, `no host named ${options.name} was added with \`ferry hosts add\` here (records in ${options.stateDir})`);
  }
  const ssh = options.ssh ?? record.ssh;
  const say = options.report ?? (() => undefined);
  say(`connecting to ${ssh.user}@${ssh.host}:${ssh.port}`);
  const session = await SshSession.connect({
    ...ssh,
    privateKeyFile: options.privateKeyFile ?? record.privateKeyFile,
    hostKey: options.hostKey ?? record.hostKey,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_SSH_CONNECT_TIMEOUT_MS,
  });
  try {
    const layout = agentInstallLayout(record.prefix, record.configDir);
    say(`stopping the agent (${record.serviceManager}) and removing ${record.prefix}`);
    await uninstall(session, layout, record.serviceManager);
  } finally {
    session.close();
  }
  deleteBootstrapRecord(options.stateDir, options.name);
  return record;
}
