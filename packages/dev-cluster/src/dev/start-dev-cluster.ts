import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError, toFerryError, type Logger } from '@ferry/protocol';
import { ClusterLayout, clusterLayout } from './cluster-layout';
import { DevClusterState, DevProcessRecord, DevProcessRole, readClusterState, writeClusterState } from './cluster-state';
import { DevClusterInput, DevClusterOptions, DevHostContext, compileDevClusterOptions } from './dev-cluster-options';
import { assertNetworkFree, createBridge, createHostNetwork } from './host-network';
import { createHostMountAndUts, createNamespaceDir, mountHostLocalDisk } from './host-namespaces';
import { spawnInHost } from './host-process';
import { natsServerConfig, redisServerConfig } from './infra-configs';
import { devNatsPrincipals, makeDevTls, natsAuthorizationConfig, natsTlsConfig, writeDevCredentials, writeSecretFile } from './nats-security';
import { prepareStorageHost, sshdArgv } from './storage-host';
import { hostSshdArgv, prepareHostSshd } from './host-sshd';
import { identifyProcess, isProcessAlive } from './process-identity';
import { SpawnedProcess, readLogTail, spawnLogged } from './spawn-logged';
import { stopDevCluster } from './stop-dev-cluster';
import { isPortAccepting, waitForPort } from './wait-for-port';

const NATS_SERVER_BINARY = '/usr/sbin/nats-server';
const REDIS_SERVER_BINARY = 'redis-server';
/** How often we look whether the cluster's processes still live while waiting for readiness. */
const LIVENESS_POLL_INTERVAL_MS = 200;

/**
 * Starts a dev cluster: nats-server, redis-server and the coordinator in the machine's root
 * namespaces, and one agent in each host (its own net + mount + UTS namespaces on a bridge in
 * 198.18.0.0/15). Resolves with the recorded state once `waitUntilReady` resolved.
 *
 * A cluster of that name that still has a live process is a CONFLICT (run `stopDevCluster`
 * first); one whose processes are all gone (a crash) is torn down and rebuilt. Any failure tears
 * down what was made and throws a FerryError naming the step and pointing at the logs.
 */
export async function startDevCluster(input: DevClusterInput): Promise<DevClusterState> {
  const options = compileDevClusterOptions(input);
  const log = options.logger.child({ cluster: options.name });
  await clearStaleCluster(options, log);
  const layout = clusterLayout(options.name, options.hosts, options.subnetIndex);
  await assertNetworkFree(layout);
  await assertPortsFree(options);

  const state = initialState(options, layout);
  fs.mkdirSync(layout.logDir, { recursive: true });
  writeClusterState(state);
  try {
    await buildCluster(state, options, log);
  } catch (err) {
    const cause = toFerryError(err);
    log.error({ err }, 'dev cluster failed to start; tearing down');
    try {
      await stopDevCluster(options.name, { graceMs: options.stopGraceMs, logger: options.logger });
    } catch (teardownErr) {
      log.error({ err: teardownErr }, 'teardown after failed start failed too');
      cause.details.push(`teardown: ${(teardownErr as Error).message}`, ...toFerryError(teardownErr).details);
    }
    throw new FerryError(cause.code, `dev cluster '${options.name}' failed to start: ${cause.message}`, {
      cause: err,
      details: cause.details,
    });
  }
  log.info({ hosts: layout.hosts.map((h) => h.name), natsUrl: state.natsUrl }, 'dev cluster ready');
  return state;
}

/** What every host is told: its name and address, and how it reaches NATS and Redis. */
export function devHostContexts(state: DevClusterState): DevHostContext[] {
  return state.layout.hosts.map((host) => ({
    name: host.name,
    address: host.address,
    natsUrl: state.hostNatsUrl,
    redisUrl: state.hostRedisUrl,
    natsCredentialsFile: state.credentials?.agents[host.name] ?? null,
  }));
}

async function clearStaleCluster(options: DevClusterOptions, log: Logger): Promise<void> {
  const previous = readClusterState(options.name);
  if (previous === null) return;
  const alive = previous.processes.filter(isProcessAlive).map((p) => `${p.role}${p.host ? ` ${p.host}` : ''} (pid ${p.pid})`);
  const starter = previous.status === 'starting' && isProcessAlive(previous.startedBy);
  if (alive.length > 0 || starter) {
    const what = starter ? `being started by pid ${previous.startedBy.pid}` : `running: ${alive.join(', ')}`;
    throw new FerryError(
      ErrorCode.CONFLICT,
      `dev cluster '${options.name}' is already ${what}; run \`ferry dev down\` first`,
    );
  }
  log.warn({ stateFile: previous.layout.stateFile }, 'found a dead dev cluster of this name; cleaning it up first');
  await stopDevCluster(options.name, { graceMs: options.stopGraceMs, logger: log });
}

async function assertPortsFree(options: DevClusterOptions): Promise<void> {
  for (const [what, port] of [['nats', options.natsPort], ['redis', options.redisPort]] as const) {
    if (await isPortAccepting('127.0.0.1', port)) {
      throw new FerryError(ErrorCode.CONFLICT, `port ${port} (for ${what}) is already in use on 127.0.0.1`);
    }
  }
}

function initialState(options: DevClusterOptions, layout: ClusterLayout): DevClusterState {
  const rootNatsHost = options.natsListenOnAllAddresses ? '127.0.0.1' : layout.bridgeAddress;
  const self = identifyProcess(process.pid);
  if (self === null) throw new FerryError(ErrorCode.INTERNAL, 'cannot read our own /proc entry');
  return {
    formatVersion: 1,
    name: options.name,
    status: 'starting',
    createdAt: new Date().toISOString(),
    startedBy: self,
    layout,
    natsPort: options.natsPort,
    redisPort: options.redisPort,
    natsUrl: `nats://${rootNatsHost}:${options.natsPort}`,
    hostNatsUrl: `nats://${layout.bridgeAddress}:${options.natsPort}`,
    redisUrl: `redis://127.0.0.1:${options.redisPort}`,
    hostRedisUrl: `redis://${layout.bridgeAddress}:${options.redisPort}`,
    namespaceDirMounted: false,
    bridgeCreated: false,
    hostsCreated: [],
    processes: [],
  };
}

async function buildCluster(state: DevClusterState, options: DevClusterOptions, log: Logger): Promise<void> {
  const { layout } = state;
  // Each step is recorded before it runs: teardown checks what exists, so over-recording is harmless.
  state.namespaceDirMounted = true;
  writeClusterState(state);
  await createNamespaceDir(layout);
  state.bridgeCreated = true;
  writeClusterState(state);
  await createBridge(layout);
  for (const host of layout.hosts) {
    state.hostsCreated.push(host.name);
    writeClusterState(state);
    await createHostNetwork(layout, host);
    await createHostMountAndUts(host);
    await mountHostLocalDisk(host);
    log.debug({ host: host.name, netns: host.netns, address: host.address }, 'host created');
  }
  state.hostsCreated.push(layout.storage.name);
  writeClusterState(state);
  await createHostNetwork(layout, layout.storage);
  await createHostMountAndUts(layout.storage);
  const storage = await prepareStorageHost(layout);

  const deadline = Date.now() + options.readyTimeoutMs;
  const remainingMs = () => Math.max(0, deadline - Date.now());
  const assertAllAlive = () => assertProcessesAlive(state);

  const natsConfig = path.join(layout.stateDir, 'nats.conf');
  const natsListen = options.natsListenOnAllAddresses ? '0.0.0.0' : layout.bridgeAddress;
  let natsSecurity = '';
  if (options.natsAuth) {
    const tls = options.natsTls ? await makeDevTls(layout.stateDir, ['127.0.0.1', layout.bridgeAddress]) : null;
    const principals = devNatsPrincipals(layout.hosts.map((h) => h.name), tls?.caFile ?? null);
    state.credentials = writeDevCredentials(layout.stateDir, principals);
    state.tlsCaFile = tls?.caFile ?? null;
    writeClusterState(state);
    natsSecurity = natsAuthorizationConfig(principals) + (tls ? natsTlsConfig(tls) : '');
  }
  // 0600: the authorization block holds every principal's password.
  writeSecretFile(natsConfig, natsServerConfig({ listenAddress: natsListen, port: options.natsPort }) + natsSecurity);
  await record(state, 'nats', undefined, spawnLogged([NATS_SERVER_BINARY, '-c', natsConfig], { logPath: logFile(layout, 'nats') }));

  const redisDir = path.join(layout.stateDir, 'redis');
  fs.mkdirSync(redisDir, { recursive: true });
  const redisConfig = path.join(layout.stateDir, 'redis.conf');
  fs.writeFileSync(
    redisConfig,
    redisServerConfig({ bindAddresses: ['127.0.0.1', layout.bridgeAddress], port: options.redisPort, dir: redisDir }),
  );
  await record(state, 'redis', undefined, spawnLogged([REDIS_SERVER_BINARY, redisConfig], { logPath: logFile(layout, 'redis') }));

  const natsRootHost = options.natsListenOnAllAddresses ? '127.0.0.1' : layout.bridgeAddress;
  await waitForPort('nats-server', natsRootHost, options.natsPort, remainingMs(), assertAllAlive);
  await waitForPort('nats-server', layout.bridgeAddress, options.natsPort, remainingMs(), assertAllAlive);
  await waitForPort('redis-server', '127.0.0.1', options.redisPort, remainingMs(), assertAllAlive);
  await waitForPort('redis-server', layout.bridgeAddress, options.redisPort, remainingMs(), assertAllAlive);
  log.debug({ natsPort: options.natsPort, redisPort: options.redisPort }, 'nats-server and redis-server accept connections');

  await record(
    state,
    'sshd',
    layout.storage.name,
    spawnInHost(layout.storage, sshdArgv(storage), { env: {}, cwd: '/', logPath: logFile(layout, 'sshd') }),
  );
  await waitForPort('sshd', layout.storage.address, 22, remainingMs(), assertAllAlive);

  if (options.hostSshd) {
    await prepareHostSshd(layout, layout.hosts);
    for (const host of layout.hosts) {
      const logPath = logFile(layout, `sshd-${host.name}`);
      await record(state, 'sshd', host.name, spawnInHost(host, hostSshdArgv(layout, host), { env: {}, cwd: '/', logPath }));
    }
    for (const host of layout.hosts) await waitForPort(`sshd on ${host.name}`, host.address, 22, remainingMs(), assertAllAlive);
  }

  const hostNames = layout.hosts.map((h) => h.name);
  const coordinator = options.coordinatorCommand({
    natsUrl: state.natsUrl,
    redisUrl: state.redisUrl,
    hostNames,
    filesystemsFile: storage.filesystemsFile,
    natsCredentialsFile: state.credentials?.coordinator ?? null,
  });
  await record(
    state,
    'coordinator',
    undefined,
    spawnLogged(coordinator.argv, { env: coordinator.env, cwd: options.cwd, logPath: logFile(layout, 'coordinator') }),
  );
  const agentHosts = options.agentHosts ?? hostNames;
  for (const [i, context] of devHostContexts(state).entries()) {
    if (!agentHosts.includes(context.name)) continue;
    const agent = options.agentCommand(context);
    const logPath = logFile(layout, `agent-${context.name}`);
    await record(state, 'agent', context.name, spawnInHost(layout.hosts[i], agent.argv, { env: agent.env, cwd: options.cwd, logPath }));
  }

  await waitUntilReadyOrFail(options.waitUntilReady(agentHosts), options.readyTimeoutMs, remainingMs(), assertAllAlive);
  state.status = 'running';
  writeClusterState(state);
}

function logFile(layout: ClusterLayout, name: string): string {
  return path.join(layout.logDir, `${name}.log`);
}

/** Records a started process in the state file at once, so a crash of ours still lets `down` find it. */
async function record(
  state: DevClusterState,
  role: DevProcessRole,
  host: string | undefined,
  starting: Promise<SpawnedProcess>,
): Promise<void> {
  const started = await starting;
  const entry: DevProcessRecord = {
    role,
    ...(host === undefined ? {} : { host }),
    pid: started.pid,
    startTime: started.startTime,
    argv: started.child.spawnargs,
    logPath: started.logPath,
  };
  state.processes.push(entry);
  writeClusterState(state);
}

/** Throws UNAVAILABLE, with the end of its log, for the first recorded process that has died. */
function assertProcessesAlive(state: DevClusterState): void {
  const dead = state.processes.find((p) => !isProcessAlive(p));
  if (dead === undefined) return;
  const who = dead.host === undefined ? dead.role : `${dead.role} on ${dead.host}`;
  throw new FerryError(ErrorCode.UNAVAILABLE, `${who} (pid ${dead.pid}) exited during start-up; see ${dead.logPath}`, {
    details: [readLogTail(dead.logPath)],
  });
}

/** Awaits the caller's readiness check, failing fast if a process dies and at the deadline. */
function waitUntilReadyOrFail(
  ready: Promise<void>,
  totalTimeoutMs: number,
  remainingMs: number,
  assertAllAlive: () => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + remainingMs;
    const timer = setInterval(() => {
      try {
        assertAllAlive();
        if (Date.now() >= deadline) {
          throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `hosts not ready within ${totalTimeoutMs} ms`);
        }
      } catch (err) {
        clearInterval(timer);
        reject(err);
      }
    }, LIVENESS_POLL_INTERVAL_MS);
    ready.then(
      () => {
        clearInterval(timer);
        resolve();
      },
      (err: unknown) => {
        clearInterval(timer);
        reject(toFerryError(err, ErrorCode.UNAVAILABLE));
      },
    );
  });
}
