import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError, type WorkloadUser } from '@ferry/protocol';
import { IDENTITY_ID_MAP, ISOLATED_ROOT_SCRIPT, isolatedRootScriptArgs, type IsolatedRootPlan } from './isolated-root';
import { childrenOf, readPidNamespace, readProcessStat, signalProcess } from './process-tree';

/** PATH given to a workload whose environment has none. */
export const DEFAULT_WORKLOAD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * Closes every descriptor above 2, then execs its arguments. Node's spawn passes only the stdio it is
 * given among the descriptors Node opened, but one the agent itself inherited without O_CLOEXEC (from
 * a shell, a supervisor) reaches every child. CRIU dumps each fd a workload holds, and one opened
 * outside the workload's mount namespace makes the restore fail.
 */
const CLOSE_INHERITED_FDS_SCRIPT =
  'for fd in /proc/self/fd/*; do fd=${fd##*/}; case $fd in 0|1|2) ;; *) eval "exec $fd>&-";; esac; done; exec "$@"';
/** How often the launcher looks for the workload root while it starts. */
const ROOT_POLL_INTERVAL_MS = 5;
/** How much of a workload's log a launch failure quotes. */
const LOG_EXCERPT_BYTES = 2048;
/** util-linux exits with these when it cannot execute the program (EX_EXEC_FAILED, EX_EXEC_ENOENT). */
const EXEC_FAILED_EXIT_CODES = new Set([126, 127]);

/** How workloads are started on this host. */
export interface WorkloadLauncherOptions {
  /** util-linux unshare: gives the workload its own PID and IPC namespaces. */
  unsharePath: string;
  /** util-linux setsid: makes the workload root a session leader. */
  setsidPath: string;
  /** bash, which closes inherited descriptors before exec-ing the rest (dash cannot name fds above 9). */
  bashPath: string;
  /** coreutils env: `env -i` sets the workload's environment exactly, without the PWD, SHLVL and _ bash would add. */
  envPath: string;
  /** How long to wait for the wrapper to fork the workload root. */
  startTimeoutMs: number;
}

/** The launcher's defaults: util-linux from /usr/bin, five seconds to start. */
export function defaultWorkloadLauncherOptions(): WorkloadLauncherOptions {
  return { unsharePath: '/usr/bin/unshare', setsidPath: '/usr/bin/setsid', bashPath: '/bin/bash', envPath: '/usr/bin/env', startTimeoutMs: 5000 };
}

/** Resolves defaults and validates once, so launches need not. */
export function compileWorkloadLauncherOptions(options: Partial<WorkloadLauncherOptions> = {}): WorkloadLauncherOptions {
  const compiled = { ...defaultWorkloadLauncherOptions(), ...options };
  for (const key of ['unsharePath', 'setsidPath', 'bashPath', 'envPath'] as const) {
    if (!path.isAbsolute(compiled[key])) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `${key} must be an absolute path, got ${compiled[key]}`);
    }
  }
  if (!(compiled.startTimeoutMs > 0)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `startTimeoutMs must be positive, got ${compiled.startTimeoutMs}`);
  }
  return compiled;
}

/** What to run. */
export interface LaunchWorkloadRequest {
  /** Workload name, for messages. */
  name: string;
  /** Program and arguments; the program is looked up in the workload's PATH. */
  argv: string[];
  /** The workload's entire environment (PATH is added when missing); nothing leaks from the agent. */
  env: Record<string, string>;
  /** Absolute working directory. */
  cwd: string;
  /** Absolute path of the file stdout and stderr are appended to. */
  logPath: string;
  /**
   * Its own mount namespace and root (isolated-root.ts), its skeleton made already; with `user`, as
   * that user, in a user namespace of its own too; with `network` (and `user`), in a network
   * namespace of its own as well, which `network` sets up (workload-network.ts) given the root's pid
   * before the program starts.
   */
  isolated?: { plan: IsolatedRootPlan; user?: WorkloadUser; network?: (rootPid: number) => Promise<void> };
}

/** A started workload. */
export interface LaunchedWorkload {
  /** The workload root as seen from our PID namespace: init (pid 1) of its own PID namespace and a session leader. */
  pid: number;
  /** The `unshare` process that forked the root; it stays its parent and exits with its status. */
  wrapperPid: number;
  /** Start time of the root in clock ticks (see {@link readProcessStat}): pid plus startTime name it unambiguously. */
  startTime: number;
  /** The wrapper as a Node child: its 'exit' event tells when the workload ended. */
  child: ChildProcess;
}

async function readLogSince(logPath: string, offset: number): Promise<string[]> {
  try {
    const handle = await fs.open(logPath, 'r');
    try {
      const { size } = await handle.stat();
      const start = Math.max(offset, size - LOG_EXCERPT_BYTES);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString('utf8').split('\n').filter((line) => line.trim() !== '');
    } finally {
      await handle.close();
    }
  } catch {
    return []; // the excerpt only decorates an error that is raised anyway
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Starts a workload the way CRIU can checkpoint it: `unshare --pid --ipc --fork setsid ARGV`, exec-ed by
 * a bash that first closes inherited descriptors, through `env -i` so the environment is exactly `env`.
 * CRIU needs the root to be the init of its own PID namespace and a session leader (else "A session
 * leader of N(1) is outside of its pid namespace", or "Can't fork for N: File exists" when restoring
 * next to the frozen source), and its own IPC namespace (SysV shared memory is refused otherwise).
 * Its stdio is opened here (stdin /dev/null, stdout and stderr appended to `logPath`) and Node passes
 * no other descriptor: every fd the workload holds gets dumped, and one opened outside the workload's
 * mount namespace cannot be restored. An O_APPEND log is also one CRIU does not size-check on restore.
 */
export async function launchWorkload(
  request: LaunchWorkloadRequest,
  options: WorkloadLauncherOptions = defaultWorkloadLauncherOptions(),
): Promise<LaunchedWorkload> {
  const { name, argv, env, cwd, logPath } = request;
  if (argv.length === 0 || argv[0] === '') {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `workload ${name}: argv must name a program`);
  }
  if (!path.isAbsolute(cwd) || !path.isAbsolute(logPath)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `workload ${name}: cwd and logPath must be absolute paths`);
  }
  for (const [key, value] of Object.entries(env)) {
    if (key === '' || key.includes('=') || key.includes('\0') || value.includes('\0')) {
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `workload ${name}: invalid environment variable ${JSON.stringify(key)}`);
    }
  }
  const cwdStat = await fs.stat(cwd).catch(() => undefined);
  if (!cwdStat?.isDirectory()) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `workload ${name}: cwd ${cwd} is not a directory`);
  }

  const stdin = await fs.open('/dev/null', fsConstants.O_RDONLY);
  const log = await fs.open(logPath, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT, 0o640);
  const logOffset = (await log.stat()).size;
  let child: ChildProcess;
  try {
    const fullEnv = { ...env, PATH: env.PATH ?? DEFAULT_WORKLOAD_PATH };
    const envArgv = [options.envPath, '-i', '--', ...Object.entries(fullEnv).map(([key, value]) => `${key}=${value}`)];
    const { isolated } = request;
    const wrapperArgv = isolated
      ? [
          ...envArgv,
          // The user namespace first, so the others belong to it (CRIU dumps them only then).
          options.unsharePath, ...(isolated.user ? ['--user'] : []), ...(isolated.user && isolated.network ? ['--net'] : []), '--mount', '--pid', '--ipc', '--fork', '--',
          options.bashPath, '-c', ISOLATED_ROOT_SCRIPT, 'ferry-root', ...isolatedRootScriptArgs(isolated.plan, logPath, cwd, isolated.user), ...argv,
        ]
      : [...envArgv, options.unsharePath, '--pid', '--ipc', '--fork', '--', options.setsidPath, '--', ...argv];
    // unshare stays a program, not unshare(2) in the agent: CLONE_NEWPID applies to the caller's later
    // children, so every process the agent spawned afterwards (CRIU included) would land in that namespace.
    // bash and env exec in place, so the spawned pid ends up being unshare's: the wrapper.
    child = spawn(options.bashPath, ['-c', CLOSE_INHERITED_FDS_SCRIPT, 'ferry-launch', ...wrapperArgv], {
      cwd,
      env: {},
      stdio: [stdin.fd, log.fd, log.fd],
      // Its own session and process group: a Ctrl-C or SIGHUP aimed at the agent must not reach workloads.
      detached: true,
    });
  } finally {
    await stdin.close();
    await log.close();
  }

  let failure: Error | undefined;
  // A permanent listener: an 'error' no one listens to (a failed spawn, a failed kill later) would crash the agent.
  child.on('error', (err) => (failure ??= err));
  const deadline = Date.now() + options.startTimeoutMs;
  const fail = async (code: ErrorCode, message: string, cause?: unknown): Promise<never> => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      for (const pid of await childrenOf(child.pid)) signalProcess(pid, 'SIGKILL');
      signalProcess(child.pid, 'SIGKILL');
    }
    const details = await readLogSince(logPath, logOffset);
    throw new FerryError(code, `workload ${name}: ${message}`, { cause, details });
  };

  let idsMapped = false;
  for (;;) {
    await sleep(ROOT_POLL_INTERVAL_MS);
    if (failure !== undefined) return fail(ErrorCode.FAILED_PRECONDITION, `cannot start ${options.bashPath}: ${failure.message}`, failure);
    if (Date.now() >= deadline) {
      return fail(ErrorCode.DEADLINE_EXCEEDED, `no session-leading root after ${options.startTimeoutMs} ms`);
    }
    if (child.pid === undefined) continue; // spawn failed; its 'error' event is on its way
    if (child.exitCode !== null || child.signalCode !== null) {
      const status = child.exitCode ?? child.signalCode;
      const code = EXEC_FAILED_EXIT_CODES.has(child.exitCode ?? -1) ? ErrorCode.INVALID_ARGUMENT : ErrorCode.FAILED_PRECONDITION;
      return fail(code, `exited while starting (status ${status})`);
    }
    const roots = await childrenOf(child.pid);
    if (roots.length > 1) return fail(ErrorCode.INTERNAL, `wrapper ${child.pid} has ${roots.length} children, expected one`);
    const rootPid = roots[0];
    if (request.isolated?.user && rootPid !== undefined && !idsMapped) {
      // unshare forked the root after making the namespaces: they exist now. Its network first (it
      // may bind its address at once); ids map 1:1; the root waits for the map before it mounts
      // anything (ISOLATED_ROOT_SCRIPT), so the program starts after both.
      if (request.isolated.network) {
        try {
          await request.isolated.network(rootPid);
        } catch (err) {
          return fail(ErrorCode.FAILED_PRECONDITION, `cannot set up its network namespace: ${(err as Error).message}`, err);
        }
      }
      try {
        await fs.writeFile(`/proc/${rootPid}/uid_map`, IDENTITY_ID_MAP);
        await fs.writeFile(`/proc/${rootPid}/gid_map`, IDENTITY_ID_MAP);
        idsMapped = true;
      } catch (err) {
        return fail(ErrorCode.FAILED_PRECONDITION, `cannot map the ids of its user namespace: ${(err as Error).message}`, err);
      }
    }
    const stat = rootPid === undefined ? undefined : await readProcessStat(rootPid);
    // setsid runs in the root before it execs the program, so sid == pid means the root is set up.
    if (rootPid !== undefined && stat !== undefined && stat.session === rootPid) {
      const [ours, theirs] = await Promise.all([readPidNamespace('self'), readPidNamespace(rootPid)]);
      if (theirs === undefined) continue; // died just now; the wrapper's exit is seen next round
      if (theirs === ours) return fail(ErrorCode.INTERNAL, `root ${rootPid} is not in a new PID namespace`);
      return { pid: rootPid, wrapperPid: child.pid, startTime: stat.startTime, child };
    }
  }
}

/** Waits until Node has reaped a launched wrapper, so no zombie outlives a kill; false on timeout. */
export function waitForWrapperExit(workload: LaunchedWorkload, timeoutMs: number): Promise<boolean> {
  const { child } = workload;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    child.once('exit', onExit);
  });
}
