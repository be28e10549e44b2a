import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, FerryError, PAGE_BYTES, silentLogger, type Logger } from '@ferry/protocol';
import { readCriuFailureDetails } from './criu-log';
import { isAlive, listTree, readPidNamespace, readProcessStat, signalProcess, signalTree, waitForExit } from '../host/process-tree';

/** CRIU releases before 4 fail on current kernels (3.17: "vdso: Unexpected rt vDSO area bounds"). */
export const MIN_CRIU_MAJOR_VERSION = 4;
/** CRIU's fault-injection code that makes it stop tasks by syscall stepping instead of hardware breakpoints. */
export const CRIU_FAULT_NO_BREAKPOINTS = '130';
/** Log file names inside the images dir, kept there like runc does so a failed migration can be inspected. */
export const DUMP_LOG_NAME = 'dump.log';
export const RESTORE_LOG_NAME = 'restore.log';
/** After criu exits, how long to wait for its stdout/stderr to drain. */
const OUTPUT_DRAIN_MS = 1000;
/** PATH for criu itself: it execs helpers (iptables, ip) by name in some modes. */
export const CRIU_PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** How criu is run on this host. */
export interface CriuDriverOptions {
  /** The criu binary: an absolute path, or a name looked up in the usual sbin/bin dirs. */
  criuPath: string;
  /** Run criu with CRIU_FAULT=130 (no hardware breakpoints); needed where the hypervisor drops them, as probeCriu finds out. */
  faultInjection: boolean;
  /** Largest unlinked-but-open file CRIU copies into the image (--ghost-limit); CRIU's own default is 1 MiB. */
  ghostLimitBytes: number;
  /** CRIU log verbosity 0-4 (-v); 4 logs every step, which is what a post-mortem needs. */
  logLevel: number;
  /** Arguments added to every `criu dump` (e.g. --external, --tcp-established). */
  extraDumpArgs: string[];
  /** Arguments added to every `criu restore` (e.g. --inherit-fd). */
  extraRestoreArgs: string[];
  /** A dump or restore still running after this long is killed and fails. */
  commandTimeoutMs: number;
  /** How long kill() waits for a tree to be gone. */
  killTimeoutMs: number;
}

/**
 * The criu binary unless configured (FERRY_CRIU_PATH): found in CRIU_PATH_ENV, which is where
 * Debian (/usr/sbin) and a source build (/usr/local/sbin) put it.
 */
export const DEFAULT_CRIU_PATH = 'criu';

/** Defaults: criu from CRIU_PATH_ENV, no fault injection (set it from the probe), 64 MiB ghost files, full logs. */
export function defaultCriuDriverOptions(): CriuDriverOptions {
  return {
    criuPath: DEFAULT_CRIU_PATH,
    faultInjection: false,
    ghostLimitBytes: 64 * 1024 * 1024,
    logLevel: 4,
    extraDumpArgs: [],
    extraRestoreArgs: [],
    commandTimeoutMs: 10 * 60 * 1000,
    killTimeoutMs: 10_000,
  };
}

/** Resolves defaults and validates once; throws INVALID_ARGUMENT. */
export function compileCriuDriverOptions(options: Partial<CriuDriverOptions> = {}): CriuDriverOptions {
  const compiled = { ...defaultCriuDriverOptions(), ...options };
  const invalid = (message: string) => new FerryError(ErrorCode.INVALID_ARGUMENT, `criu driver: ${message}`);
  // A bare name is looked up in CRIU_PATH_ENV; a relative path would depend on the images dir criu runs in.
  if (compiled.criuPath === '' || (!path.isAbsolute(compiled.criuPath) && compiled.criuPath.includes('/'))) {
    throw invalid(`criuPath must be an absolute path or a command name, got ${JSON.stringify(compiled.criuPath)}`);
  }
  if (!Number.isSafeInteger(compiled.ghostLimitBytes) || compiled.ghostLimitBytes < 0) {
    throw invalid(`ghostLimitBytes must be a non-negative integer, got ${compiled.ghostLimitBytes}`);
  }
  if (!Number.isInteger(compiled.logLevel) || compiled.logLevel < 0 || compiled.logLevel > 4) {
    throw invalid(`logLevel must be 0-4, got ${compiled.logLevel}`);
  }
  for (const key of ['commandTimeoutMs', 'killTimeoutMs'] as const) {
    if (!(compiled[key] > 0)) throw invalid(`${key} must be positive, got ${compiled[key]}`);
  }
  return { ...compiled, extraDumpArgs: [...compiled.extraDumpArgs], extraRestoreArgs: [...compiled.extraRestoreArgs] };
}

/** What to checkpoint. */
export interface CriuDumpRequest {
  /** Root of the tree (a PID namespace init, as launchWorkload makes it), in our PID namespace. */
  pid: number;
  /** Where the images go; created with mode 0700 (images hold the workload's memory). */
  imagesDir: string;
  /** Keep the tree stopped after the dump (the migration default), instead of CRIU killing it. */
  leaveStopped?: boolean;
  /**
   * Dump established TCP connections in repair mode (`--tcp-established`), locked with nftables
   * while the tree is frozen (`--network-lock nftables`: CRIU's per-connection table, which ferry
   * drops after a release or a rollback, tcp-sockets.ts).
   */
  tcpEstablished?: boolean;
  /** Arguments for this dump only, after `extraDumpArgs`. */
  extraArgs?: string[];
  /** Files to dump as external (`--external file[<mnt_id>:<ino>]`): a restore must hand them in. */
  externalFiles?: string[];
  /** Fds handed to criu: passFds[i] is fd 3+i in criu (what --ps-socket names). */
  passFds?: number[];
}

/** CRIU counts memory in pages of the kernel's base size, 4 KiB on the x86-64 hosts ferry runs on. */

/** Bytes of "Memory pages written: N" in `criu dump --display-stats` output, or null without one. */
export function memoryBytesFromDumpStats(output: string): number | null {
  const m = /Memory pages written:\s*(\d+)/.exec(output);
  return m ? Number(m[1]) * PAGE_BYTES : null;
}

export interface CriuDumpResult {
  durationMs: number;
  /** Memory bytes the dump wrote (CRIU's --display-stats "Memory pages written"), to images or a page server; null if not reported. */
  memoryBytesWritten: number | null;
  /** CRIU's log, inside the images dir. */
  logPath: string;
}

/** What to restore. */
export interface CriuRestoreRequest {
  imagesDir: string;
  /** Where CRIU writes the restored root's pid; a stale file is replaced. Default: restore.pid in the images dir. */
  pidFile?: string;
  /** Restore TCP connections from repair mode (`--tcp-established`); the lock method comes from the dump. */
  tcpEstablished?: boolean;
  /** Arguments for this restore only, after `extraRestoreArgs`. */
  extraArgs?: string[];
  /** Our open fds CRIU puts in place of external files (`--inherit-fd fd[N]:file[...]`). */
  inheritFds?: { fd: number; key: string }[];
}

export interface CriuRestoreResult {
  /** The restored root in our PID namespace. */
  pid: number;
  /** Its start time (see readProcessStat), to tell it from a later process with the same pid. */
  startTime: number;
  durationMs: number;
  logPath: string;
}

/** The outcome of one criu run. */
export interface CriuRun {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
}

/**
 * Drives the criu binary for one host: version check, dump, restore, and the two ends of a frozen
 * tree's life (thaw, kill). Policy (when to kill the source, when to thaw) stays with the caller.
 */
export class CriuDriver {
  readonly options: CriuDriverOptions;
  private readonly logger: Logger;
  private versionCheck: Promise<string> | undefined;

  constructor(options: Partial<CriuDriverOptions> = {}, logger: Logger = silentLogger) {
    this.options = compileCriuDriverOptions(options);
    this.logger = logger;
  }

  /** Runs criu with the driver's environment; never throws for a non-zero exit (see the result). */
  async run(args: string[], cwd = '/', passFds: number[] = []): Promise<CriuRun> {
    const env: Record<string, string> = { PATH: CRIU_PATH_ENV };
    if (this.options.faultInjection) env.CRIU_FAULT = CRIU_FAULT_NO_BREAKPOINTS;
    const started = process.hrtime.bigint();
    // passFds[i] becomes fd 3+i in criu (what --inherit-fd names).
    const child = spawn(this.options.criuPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe', ...passFds] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, this.options.commandTimeoutMs);
    try {
      const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, sig) => resolve([code, sig]));
      });
      // Restored tasks are forked by criu and could hold its pipes for a moment; 'close' is not awaited forever.
      if (child.stdout!.readable || child.stderr!.readable) {
        await new Promise<void>((resolve) => {
          const drain = setTimeout(resolve, OUTPUT_DRAIN_MS);
          child.once('close', () => {
            clearTimeout(drain);
            resolve();
          });
        });
      }
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      return {
        exitCode,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        durationMs,
        timedOut,
      };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `cannot run ${this.options.criuPath}: ${code ?? String(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /** CRIU's version ("4.1.1"), from `criu --version`. */
  async version(): Promise<string> {
    const run = await this.run(['--version']);
    const match = /Version:\s*(\d+(?:\.\d+)*)/.exec(run.stdout);
    if (run.exitCode !== 0 || !match) {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `criu --version failed (exit status ${run.exitCode ?? run.signal})`, {
        details: [run.stdout, run.stderr].join('\n').split('\n').filter((l) => l.trim() !== '').slice(0, 10),
      });
    }
    return match[1] as string;
  }

  /** Fails with FAILED_PRECONDITION unless criu runs and is at least MIN_CRIU_MAJOR_VERSION; checked once. */
  ensureSupportedVersion(): Promise<string> {
    this.versionCheck ??= this.version().then((version) => {
      if (Number(version.split('.')[0]) < MIN_CRIU_MAJOR_VERSION) {
        throw new FerryError(ErrorCode.FAILED_PRECONDITION, `criu ${version} is too old: ferry needs ${MIN_CRIU_MAJOR_VERSION}.0 or later`);
      }
      return version;
    });
    // A failed check is not cached: criu may be installed while the agent runs.
    this.versionCheck.catch(() => (this.versionCheck = undefined));
    return this.versionCheck;
  }

  /** `criu check`: ok when CRIU says "Looks good"; the output says what is missing otherwise. */
  async check(): Promise<{ ok: boolean; output: string }> {
    const run = await this.run(['check']);
    const output = `${run.stdout}${run.stderr}`.trim();
    return { ok: run.exitCode === 0 && /Looks good/.test(output), output };
  }

  /**
   * `criu dump` of the tree rooted at `pid` into `imagesDir`. No --shell-job: the root leads its own
   * session inside its own PID namespace, so CRIU dumps the session whole. With leaveStopped the tree
   * must still be there, stopped, afterwards; a dump that lost it (the symptom of hardware breakpoints
   * failing without CRIU_FAULT) is a failure even when criu exits 0.
   */
  async dump(request: CriuDumpRequest): Promise<CriuDumpResult> {
    const { pid, leaveStopped = true } = request;
    const { imagesDir, root, args: dumpArgs } = await this.prepareDump(request);
    const logPath = path.join(imagesDir, DUMP_LOG_NAME);
    const args = [...dumpArgs, '--log-file', DUMP_LOG_NAME, `-v${this.options.logLevel}`];
    this.logger.debug({ pid, imagesDir, args }, 'criu dump');
    const run = await this.run(args, imagesDir, request.passFds ?? []);
    if (run.exitCode !== 0) {
      const details = await readCriuFailureDetails(logPath, run.stderr);
      throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `criu dump of pid ${pid} failed (${describeExit(run)})`, { details });
    }
    if (leaveStopped) {
      const after = await readProcessStat(pid);
      if (after === undefined || after.startTime !== root.startTime || !(await isAlive(pid))) {
        const details = await readCriuFailureDetails(logPath, run.stderr);
        throw new FerryError(ErrorCode.CHECKPOINT_FAILED, `criu dump of pid ${pid} exited 0 but the process is gone`, { details });
      }
    }
    this.logger.info({ pid, imagesDir, durationMs: run.durationMs }, 'criu dump done');
    return { durationMs: run.durationMs, logPath, memoryBytesWritten: memoryBytesFromDumpStats(run.stdout + run.stderr) };
  }

  /**
   * Checks the tree is there, makes the images dir and returns `criu dump`'s arguments for it, bar
   * the log options (the lazy dump's log lives elsewhere, see LazyDump in criu-service.ts).
   */
  async prepareDump(request: CriuDumpRequest): Promise<{ imagesDir: string; root: { startTime: number }; args: string[] }> {
    const { pid, leaveStopped = true } = request;
    await this.ensureSupportedVersion();
    const imagesDir = path.resolve(request.imagesDir);
    const root = await readProcessStat(pid);
    if (root === undefined || !(await isAlive(pid))) {
      throw new FerryError(ErrorCode.NOT_FOUND, `no process ${pid} to dump`);
    }
    await fs.mkdir(imagesDir, { recursive: true, mode: 0o700 });
    await fs.chmod(imagesDir, 0o700); // mkdir's mode is masked by umask and ignored for an existing dir
    const args = [
      'dump',
      '--tree', String(pid),
      '--images-dir', imagesDir,
      '--ghost-limit', String(this.options.ghostLimitBytes),
      // File locks the tree holds (POSIX, OFD, flock) are dumped and taken again on restore;
      // without it CRIU refuses any tree holding one ("Some file locks are hold by dumping tasks").
      '--file-locks',
      // Its summary says how many memory pages went out: with a page server, nothing else here knows.
      '--display-stats',
      ...(leaveStopped ? ['--leave-stopped'] : []),
      ...(request.tcpEstablished ? ['--tcp-established', '--network-lock', 'nftables'] : []),
      ...(request.externalFiles ?? []).flatMap((key) => ['--external', key]),
      ...this.options.extraDumpArgs,
      ...(request.extraArgs ?? []),
    ];
    return { imagesDir, root, args };
  }

  /**
   * `criu restore --restore-detached` from `imagesDir`. The restored root comes back as the init of a
   * new PID namespace, a child of criu until criu exits, then of this host's reaper.
   */
  async restore(request: CriuRestoreRequest): Promise<CriuRestoreResult> {
    await this.ensureSupportedVersion();
    const imagesDir = path.resolve(request.imagesDir);
    const dirStat = await fs.stat(imagesDir).catch(() => undefined);
    if (!dirStat?.isDirectory()) throw new FerryError(ErrorCode.NOT_FOUND, `no images dir ${imagesDir}`);
    const pidFile = path.resolve(imagesDir, request.pidFile ?? 'restore.pid');
    // CRIU creates the pidfile with O_EXCL and fails the whole restore on a leftover one.
    await fs.rm(pidFile, { force: true });
    const logPath = path.join(imagesDir, RESTORE_LOG_NAME);
    const args = [
      'restore',
      '--restore-detached',
      '--images-dir', imagesDir,
      '--log-file', RESTORE_LOG_NAME,
      `-v${this.options.logLevel}`,
      '--pidfile', pidFile,
      ...(request.inheritFds ?? []).flatMap((f, i) => ['--inherit-fd', `fd[${3 + i}]:${f.key}`]),
      ...(request.tcpEstablished ? ['--tcp-established'] : []),
      '--file-locks',
      ...this.options.extraRestoreArgs,
      ...(request.extraArgs ?? []),
    ];
    this.logger.debug({ imagesDir, args }, 'criu restore');
    const run = await this.run(args, imagesDir, (request.inheritFds ?? []).map((f) => f.fd));
    if (run.exitCode !== 0) {
      const details = await readCriuFailureDetails(logPath, run.stderr);
      throw new FerryError(ErrorCode.RESTORE_FAILED, `criu restore from ${imagesDir} failed (${describeExit(run)})`, { details });
    }
    const pidText = await fs.readFile(pidFile, 'utf8').catch((err: unknown) => {
      throw new FerryError(ErrorCode.RESTORE_FAILED, `criu restore exited 0 but wrote no pidfile ${pidFile}`, { cause: err });
    });
    const pid = Number(pidText.trim());
    const stat = Number.isSafeInteger(pid) && pid > 1 ? await readProcessStat(pid) : undefined;
    if (stat === undefined || !(await isAlive(pid, stat.startTime))) {
      const details = await readCriuFailureDetails(logPath, run.stderr);
      throw new FerryError(ErrorCode.RESTORE_FAILED, `criu restore exited 0 but restored pid ${pidText.trim()} is not running`, { details });
    }
    this.logger.info({ pid, imagesDir, durationMs: run.durationMs }, 'criu restore done');
    return { pid, startTime: stat.startTime, durationMs: run.durationMs, logPath };
  }

  /** Resumes a tree left stopped by `dump({ leaveStopped: true })`: SIGCONT to every process. Returns the pids resumed. */
  /**
   * SIGSTOP to every process of a tree CRIU holds (a lazy dump serving its pages): queued behind
   * CRIU's ptrace stop, it keeps the tree stopped if CRIU exits without stopping it itself (killed,
   * or failing, when CRIU would let it run on). thaw() undoes it.
   */
  async holdStopped(rootPid: number): Promise<number[]> {
    if (!(await isAlive(rootPid))) throw new FerryError(ErrorCode.NOT_FOUND, `no process ${rootPid} to hold`);
    return signalTree(rootPid, 'SIGSTOP');
  }

  async thaw(rootPid: number): Promise<number[]> {
    if (!(await isAlive(rootPid))) throw new FerryError(ErrorCode.NOT_FOUND, `no process ${rootPid} to thaw`);
    const pids = await signalTree(rootPid, 'SIGCONT');
    this.logger.info({ pid: rootPid, pids }, 'thawed');
    return pids;
  }

  /**
   * Kills a workload tree and waits until every process of it is gone. SIGKILL to a PID namespace
   * init makes the kernel kill the whole namespace; a root that is not one gets every process signalled.
   * Stopped processes die too: SIGKILL wakes them. A gone root is not an error.
   */
  async kill(rootPid: number): Promise<void> {
    const root = await readProcessStat(rootPid);
    if (root === undefined || !(await isAlive(rootPid))) return;
    const members: { pid: number; startTime: number }[] = [];
    for (const pid of await listTree(rootPid)) {
      const stat = await readProcessStat(pid);
      if (stat !== undefined) members.push({ pid, startTime: stat.startTime });
    }
    const [ours, theirs] = await Promise.all([readPidNamespace('self'), readPidNamespace(rootPid)]);
    if (theirs !== undefined && theirs !== ours) signalProcess(rootPid, 'SIGKILL');
    else await signalTree(rootPid, 'SIGKILL');
    const deadline = Date.now() + this.options.killTimeoutMs;
    for (const { pid, startTime } of members) {
      if (!(await waitForExit(pid, Math.max(0, deadline - Date.now()), startTime))) {
        throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `process ${pid} of tree ${rootPid} still alive ${this.options.killTimeoutMs} ms after SIGKILL`);
      }
    }
    this.logger.info({ pid: rootPid, pids: members.map((m) => m.pid) }, 'killed');
  }
}

function describeExit(run: CriuRun): string {
  if (run.timedOut) return 'timed out, killed';
  return run.exitCode !== null ? `exit status ${run.exitCode}` : `killed by ${run.signal}`;
}
