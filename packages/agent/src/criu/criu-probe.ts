import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { ErrorCode, FerryError, silentLogger, toFerryError, type CriuInfo, type Logger } from '@ferry/protocol';
import { spillLiveFiles } from '@ferry/transfer';
import { CriuDriver, DEFAULT_CRIU_PATH, MIN_CRIU_MAJOR_VERSION } from './criu-driver';
import { CaptureStreamer, type StreamerSyscalls } from './image-streamer';
import { probePageServerTls } from './page-server-tls';
import { isAlive, readProcessStat } from '../host/process-tree';
import { defaultWorkloadLauncherOptions, launchWorkload, waitForWrapperExit, type LaunchedWorkload, type WorkloadLauncherOptions } from '../host/workload-launcher';

/** How long a restored throwaway must keep running before it counts as restored: a task that a missed breakpoint derails dies at once. */
export const RESTORED_SETTLE_MS = 100;
/** Upper bound for each criu run of the probe; the throwaway is tiny, so anything slower is broken. */
export const PROBE_CRIU_TIMEOUT_MS = 30_000;
/** How long the probe waits for a killed throwaway (and its wrapper) to be gone. */
const PROBE_KILL_TIMEOUT_MS = 5000;

/** How to probe. */
export interface CriuProbeOptions {
  /** The criu binary: an absolute path or a command name. */
  criuPath: string;
  /** A temporary dir for the throwaway's images is made (and removed) in here. */
  workDir: string;
  /**
   * The throwaway workload. A busy shell loop by default: CRIU must interrupt it in user space, and
   * every dump ends with CRIU stopping the task at its sigreturn, where breakpoints are used.
   */
  throwawayArgv: string[];
  /** How the throwaway is launched (the same way workloads are). */
  launcher: WorkloadLauncherOptions;
  /** Where the probe reports what it found. */
  logger: Logger;
  /**
   * The agent's image streamer calls (@ferry/native): with them the probe also tries `criu dump
   * --stream` through this agent's CaptureStreamer (CriuInfo.stream); without, stream is false.
   */
  streamSyscalls?: StreamerSyscalls;
}

/** Defaults: criu from CRIU_PATH_ENV, temp dirs in the OS temp dir, a busy `sh` loop as throwaway. */
export function defaultCriuProbeOptions(): CriuProbeOptions {
  return {
    criuPath: DEFAULT_CRIU_PATH,
    workDir: os.tmpdir(),
    throwawayArgv: ['/bin/sh', '-c', 'while :; do :; done'],
    launcher: defaultWorkloadLauncherOptions(),
    logger: silentLogger,
  };
}

/** CriuInfo plus how long the probe took. */
export interface CriuProbeResult extends CriuInfo {
  durationMs: number;
}

/** The outcome of one dump-and-restore of a throwaway. */
export interface DumpRestoreAttempt {
  ok: boolean;
  /** What went wrong, when not ok. */
  problem?: string;
  dumpMs?: number;
  restoreMs?: number;
}

/** What the attempts say about fault injection. */
export interface FaultInjectionDecision {
  dumpRestoreOk: boolean;
  needsFaultInjection: boolean;
  /** Set when neither attempt worked. */
  problem?: string;
}

/**
 * Tries plain CRIU first, and CRIU_FAULT=130 only when that fails: fault injection is a workaround
 * (slower syscall stepping instead of hardware breakpoints) to use only where the host needs it.
 */
export async function decideFaultInjection(attempt: (faultInjection: boolean) => Promise<DumpRestoreAttempt>): Promise<FaultInjectionDecision> {
  const plain = await attempt(false);
  if (plain.ok) return { dumpRestoreOk: true, needsFaultInjection: false };
  const withFault = await attempt(true);
  if (withFault.ok) return { dumpRestoreOk: true, needsFaultInjection: true };
  return {
    dumpRestoreOk: false,
    needsFaultInjection: false,
    problem: `dump+restore failed: plain: ${plain.problem ?? 'unknown'}; with CRIU_FAULT=130: ${withFault.problem ?? 'unknown'}`,
  };
}

function describe(err: unknown): string {
  const ferry = toFerryError(err);
  return ferry.details.length > 0 ? `${ferry.message}: ${ferry.details.join(' | ')}` : ferry.message;
}

/**
 * Launches the throwaway, dumps it leaving it stopped, kills the frozen copy, restores it, checks the
 * restored copy runs, and cleans up every process and file it made, whatever happened.
 */
/** How many times the probe tries a streamed dump (and the pipe-data throwaway) before it says this host cannot. */
const STREAM_PROBE_ATTEMPTS = 4;

export async function attemptDumpRestore(options: CriuProbeOptions, faultInjection: boolean, { stream = false } = {}): Promise<DumpRestoreAttempt> {
  const driver = new CriuDriver(
    { criuPath: options.criuPath, faultInjection, commandTimeoutMs: PROBE_CRIU_TIMEOUT_MS, killTimeoutMs: PROBE_KILL_TIMEOUT_MS },
    options.logger,
  );
  await fs.mkdir(options.workDir, { recursive: true, mode: 0o700 });
  const dir = await fs.mkdtemp(path.join(options.workDir, 'criu-probe-'));
  const imagesDir = path.join(dir, 'images');
  let source: LaunchedWorkload | undefined;
  let restored: { pid: number; startTime: number } | undefined;
  try {
    source = await launchWorkload(
      { name: 'criu-probe', argv: options.throwawayArgv, env: {}, cwd: dir, logPath: path.join(dir, 'workload.log') },
      options.launcher,
    );
    const dumped = stream
      ? await dumpThroughStreamer(driver, options, source.pid, imagesDir)
      : await driver.dump({ pid: source.pid, imagesDir, leaveStopped: true });
    const frozen = await readProcessStat(source.pid);
    if (frozen?.state !== 'T') return { ok: false, problem: `throwaway not stopped after dump (state ${frozen?.state ?? 'gone'})` };
    await driver.kill(source.pid);
    const restoredRun = await driver.restore({ imagesDir, pidFile: path.join(dir, 'restored.pid') });
    restored = { pid: restoredRun.pid, startTime: restoredRun.startTime };
    await new Promise((resolve) => setTimeout(resolve, RESTORED_SETTLE_MS));
    const after = await readProcessStat(restored.pid);
    if (after === undefined || after.startTime !== restored.startTime || !(await isAlive(restored.pid)) || after.state === 'T') {
      return { ok: false, problem: `restored throwaway is not running (state ${after?.state ?? 'gone'})` };
    }
    return { ok: true, dumpMs: dumped.durationMs, restoreMs: restoredRun.durationMs };
  } catch (err) {
    return { ok: false, problem: describe(err) };
  } finally {
    if (restored && (await isAlive(restored.pid, restored.startTime))) await driver.kill(restored.pid);
    if (source) {
      if (await isAlive(source.pid, source.startTime)) await driver.kill(source.pid);
      await waitForWrapperExit(source, PROBE_KILL_TIMEOUT_MS);
    }
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * `criu dump --stream` with this agent's CaptureStreamer as CRIU's image streamer, the live files
 * written into the images dir as a sender without a pump would: the images a restore then reads
 * are exactly what the streamer received.
 */
async function dumpThroughStreamer(driver: CriuDriver, options: CriuProbeOptions, pid: number, imagesDir: string): Promise<{ durationMs: number }> {
  if (!options.streamSyscalls) throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'no image streamer calls to probe with');
  await fs.mkdir(imagesDir, { recursive: true, mode: 0o700 });
  const streamer = await CaptureStreamer.listen(options.streamSyscalls, imagesDir, options.logger);
  const spilling = spillLiveFiles(streamer.liveFiles(), imagesDir, () => undefined);
  spilling.catch(() => undefined);
  try {
    const dumped = await driver.dump({ pid, imagesDir, leaveStopped: true, extraArgs: ['--stream'] });
    await streamer.criuDone();
    streamer.finish();
    await spilling;
    return dumped;
  } catch (err) {
    streamer.abort(new FerryError(ErrorCode.CHECKPOINT_FAILED, 'probe dump failed'));
    throw err;
  }
}

/**
 * The pipe-data probe's throwaway: a FIFO in its own (the probe's temporary) directory, opened
 * both ways on fd 3 and holding a few bytes nobody reads, then the same busy loop.
 */
export const PIPE_DATA_THROWAWAY = ['/bin/sh', '-c', 'mkfifo probe.fifo && exec 3<>probe.fifo && printf unread >&3 && while :; do :; done'];

/** Bytes of the pipe CRIU's lazy-dump page server makes to copy pages out of its page pipes (criu/page-pipe.c). */
export const CRIU_LAZY_PIPE_BYTES = 4 * 1024 * 1024;
const CAP_SYS_RESOURCE = 24;

/**
 * Whether CRIU may size a pipe to CRIU_LAZY_PIPE_BYTES: it fails the lazy dump's first page request
 * otherwise ("page-pipe: tee: 65536: Operation not permitted": its F_SETPIPE_SZ was refused, the
 * pipe stayed 64 KiB). Root without CAP_SYS_RESOURCE (this VM kind) is held to fs.pipe-max-size.
 */
export async function lazyDumpPipesAllowed(
  read: (file: string) => Promise<string> = (file) => fs.readFile(file, 'utf8'),
): Promise<boolean> {
  const status = await read('/proc/self/status').catch(() => '');
  const capEff = /^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1];
  if (capEff !== undefined && (BigInt(`0x${capEff}`) >> BigInt(CAP_SYS_RESOURCE)) & BigInt(1)) return true;
  const max = Number((await read('/proc/sys/fs/pipe-max-size').catch(() => '0')).trim());
  return max >= CRIU_LAZY_PIPE_BYTES;
}

/**
 * Finds out whether this host can checkpoint and restore, and how: `criu --version` (at least
 * MIN_CRIU_MAJOR_VERSION), `criu check`, then a real dump and restore of a throwaway workload, plain
 * first and with CRIU_FAULT=130 if plain fails (hardware breakpoints do not work in some VMs: a plain
 * dump then kills the task). Never throws for what it finds; `problem` says what is wrong.
 */
export async function probeCriu(partial: Partial<CriuProbeOptions> = {}): Promise<CriuProbeResult> {
  const options = { ...defaultCriuProbeOptions(), ...partial };
  const started = process.hrtime.bigint();
  const elapsedMs = () => Number(process.hrtime.bigint() - started) / 1e6;
  const driver = new CriuDriver({ criuPath: options.criuPath, commandTimeoutMs: PROBE_CRIU_TIMEOUT_MS }, options.logger);
  const unusable = (version: string, checkOk: boolean, problem: string): CriuProbeResult => ({
    version, usable: false, checkOk, needsFaultInjection: false, dumpRestoreOk: false, lazyPages: false, pageServerTls: false, lazyDump: false, pageTunnel: false, pipeData: false, stream: false, memoryPrecopy: false, unprivilegedUserfaultfd: false, problem, durationMs: elapsedMs(),
  });

  let version: string;
  try {
    version = await driver.version();
  } catch (err) {
    return unusable('', false, describe(err));
  }
  if (Number(version.split('.')[0]) < MIN_CRIU_MAJOR_VERSION) {
    return unusable(version, false, `criu ${version} is too old: ferry needs ${MIN_CRIU_MAJOR_VERSION}.0 or later`);
  }
  const check = await driver.check().catch((err: unknown) => ({ ok: false, output: describe(err) }));
  // Lazy restore needs userfaultfd with fork/remap events (CRIU's "uffd-noncoop").
  const lazyPages = await driver.run(['check', '--feature', 'uffd-noncoop']).then((r) => r.exitCode === 0, () => false);
  const lazyDump = lazyPages && (await lazyDumpPipesAllowed());
  // The page server can run over mutual TLS (page-server-tls.ts): criu has GnuTLS, openssl issues certificates.
  const help = await driver.run(['--help']).then((r) => r.stdout + r.stderr, () => '');
  await fs.mkdir(options.workDir, { recursive: true, mode: 0o700 });
  const pageServerTls = await probePageServerTls(help, path.join(options.workDir, `criu-probe-tls-${process.pid}`));
  // ferry's page tunnel hands CRIU a connected socket; the agent adds whether it can seal (start-agent.ts).
  const pageTunnel = /--ps-socket\b/.test(help);
  let decision = await decideFaultInjection((faultInjection) => attemptDumpRestore(options, faultInjection));
  if (!decision.dumpRestoreOk) {
    // Once more before declaring CRIU unusable here: with several agents probing at once a
    // throwaway was now and then found running after `--leave-stopped` ("not stopped after dump
    // (state R)", both ways in a row), and an unusable host takes no migrations until it restarts.
    options.logger.warn({ problem: decision.problem }, 'the throwaway dump and restore failed; probing once more');
    decision = await decideFaultInjection((faultInjection) => attemptDumpRestore(options, faultInjection));
  }
  // Only worth asking of a CRIU that works: a throwaway holding unread data in a FIFO. Tried like
  // the streamed dump below (a kernel that refuses the gift fails every time; a loaded machine, seen
  // in a test run with others running, once): a false answer refuses every workload holding pipe
  // data whose migration targets this host, until the agent restarts.
  let pipeData = false;
  for (let attempt = 1; decision.dumpRestoreOk && !pipeData && attempt <= STREAM_PROBE_ATTEMPTS; attempt++) {
    const tried = await attemptDumpRestore({ ...options, throwawayArgv: PIPE_DATA_THROWAWAY }, decision.needsFaultInjection);
    pipeData = tried.ok;
    if (!tried.ok) {
      options.logger.warn({ problem: tried.problem, attempt }, 'the pipe-data throwaway did not dump and restore');
      await new Promise((r) => setTimeout(r, 250 * attempt));
    }
  }
  // A dump through this agent's image streamer, restored from what it received.
  // Tried up to STREAM_PROBE_ATTEMPTS times, a little apart: on a loaded machine a throwaway dump
  // fails now and then for reasons of its own (seen: "not stopped after dump" with several agents
  // probing at once; in a full test run, twice in a row), and a false answer leaves this host
  // without its fastest data path, and its migrations on another, until the agent restarts.
  const canStream = decision.dumpRestoreOk && options.streamSyscalls !== undefined && /--stream\b/.test(help);
  let streamAttempt: DumpRestoreAttempt | undefined;
  for (let attempt = 1; canStream && attempt <= STREAM_PROBE_ATTEMPTS; attempt++) {
    streamAttempt = await attemptDumpRestore(options, decision.needsFaultInjection, { stream: true });
    if (streamAttempt.ok) break;
    options.logger.warn({ problem: streamAttempt.problem, attempt }, 'criu dump --stream failed in the probe');
    await new Promise((r) => setTimeout(r, 250 * attempt));
  }
  const stream = streamAttempt?.ok === true;
  if (streamAttempt && !streamAttempt.ok) options.logger.warn({ problem: streamAttempt.problem }, 'criu dump --stream did not work here; memory will not stream');
  const problems = [
    ...(check.ok ? [] : [`criu check failed: ${check.output.split('\n').slice(-5).join(' | ')}`]),
    ...(decision.problem ? [decision.problem] : []),
  ];
  const result: CriuProbeResult = {
    version,
    usable: check.ok && decision.dumpRestoreOk,
    checkOk: check.ok,
    needsFaultInjection: decision.needsFaultInjection,
    dumpRestoreOk: decision.dumpRestoreOk,
    lazyPages,
    pageServerTls,
    lazyDump,
    pageTunnel,
    pipeData,
    stream,
    // Pre-copy's deltas replace the streamed dump's pages files; the addon that streams also hashes.
    memoryPrecopy: stream,
    unprivilegedUserfaultfd: lazyPages && (await unprivilegedUserfaultfd()),
    durationMs: elapsedMs(),
  };
  if (problems.length > 0) result.problem = problems.join('; ').slice(0, 4096);
  options.logger.info({ ...result }, 'criu probed');
  return result;
}

/** vm.unprivileged_userfaultfd is 1: a task in a user namespace of its own may make a userfaultfd. */
async function unprivilegedUserfaultfd(): Promise<boolean> {
  return (await fs.readFile('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').catch(() => '0')).trim() === '1';
}
