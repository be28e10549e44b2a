import * as path from 'node:path';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { HostLayout, NETNS_DIR } from './cluster-layout';
import { DevClusterState, readClusterState } from './cluster-state';
import { CommandResult, runCommand } from './run-command';
import { SpawnedProcess, spawnLogged } from './spawn-logged';

/**
 * The argv prefix that runs a command inside a host: its network, mount and UTS namespaces.
 * nsenter execs the command, so the pid of the spawned process is the command's. `--wd` because
 * entering a mount namespace resets the working directory to its root.
 */
export function hostEnterArgv(host: HostLayout, cwd: string): string[] {
  return [
    'nsenter',
    `--net=${path.join(NETNS_DIR, host.netns)}`,
    `--mount=${host.mountNsFile}`,
    `--uts=${host.utsNsFile}`,
    `--wd=${cwd}`,
    '--',
  ];
}

/**
 * Wraps a command so its stdio is opened inside the host: CRIU cannot dump a process holding an
 * fd opened in another mount namespace ("Can't lookup mount=N for fd=0"). The log path names the
 * same file inside and outside, since hosts share the machine's filesystem.
 */
export function withStdioOpenedInside(argv: string[], logPath: string): string[] {
  return ['/bin/sh', '-c', 'exec </dev/null >>"$0" 2>&1 && exec "$@"', logPath, ...argv];
}

/** Finds a host of a recorded cluster, or throws NOT_FOUND. */
export function requireHost(clusterName: string, hostName: string): { state: DevClusterState; host: HostLayout } {
  const state = readClusterState(clusterName);
  if (state === null) throw new FerryError(ErrorCode.NOT_FOUND, `no dev cluster named '${clusterName}' is running`);
  const host = state.layout.hosts.find((h) => h.name === hostName);
  if (host === undefined) {
    const names = state.layout.hosts.map((h) => h.name).join(', ');
    throw new FerryError(ErrorCode.NOT_FOUND, `dev cluster '${clusterName}' has no host '${hostName}' (hosts: ${names})`);
  }
  return { state, host };
}

export interface HostProcessOptions {
  /** Merged over this process's environment. */
  env?: Record<string, string>;
  /** Working directory inside the host; default this process's. */
  cwd?: string;
  /** Where stdout+stderr go; default `<cluster logs>/<host>-<command>-<time>.log`. */
  logPath?: string;
}

/** Starts a long-running process inside a host, given the host's layout. */
export function spawnInHost(host: HostLayout, argv: string[], options: HostProcessOptions & { logPath: string }): Promise<SpawnedProcess> {
  const cwd = options.cwd ?? process.cwd();
  return spawnLogged([...hostEnterArgv(host, cwd), ...withStdioOpenedInside(argv, options.logPath)], {
    env: options.env,
    logPath: options.logPath,
  });
}

/**
 * Starts a detached process inside a host of a running dev cluster (tests, the storage sshd).
 * It is not recorded in the state file; `stopDevCluster` finds and kills it through its namespaces.
 */
export function startProcessInHost(
  clusterName: string,
  hostName: string,
  argv: string[],
  options: HostProcessOptions = {},
): Promise<SpawnedProcess> {
  const { state, host } = requireHost(clusterName, hostName);
  const logPath =
    options.logPath ?? path.join(state.layout.logDir, `${hostName}-${path.basename(argv[0] ?? 'process')}-${Date.now()}.log`);
  return spawnInHost(host, argv, { ...options, logPath });
}

export interface HostExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a command to completion inside a host; a non-zero exit throws a FerryError with its stderr. */
export function hostExec(
  clusterName: string,
  hostName: string,
  argv: string[],
  options: HostExecOptions = {},
): Promise<CommandResult> {
  const { host } = requireHost(clusterName, hostName);
  const [file, ...args] = [...hostEnterArgv(host, options.cwd ?? '/'), ...argv];
  return runCommand(file, args, { env: { ...process.env, ...options.env }, timeoutMs: options.timeoutMs });
}
