/**
 * Long-running criu helpers on the target:
 * - `criu page-server`, for the `page-server` transport: the source's `criu dump --page-server`
 *   streams the memory pages straight into the target's image directory over one TCP connection
 *   (CRIU splices them, no user-space copy: a fraction of the CPU ferry's msgpack stream needs on a
 *   2-core host), while ferry's transfer carries the few small non-memory images. It serves exactly
 *   one dump and exits 0 once the dump has sent everything.
 * - `criu lazy-pages`, for the lazy restore: `criu restore --lazy-pages` brings the tree back with
 *   its memory unpopulated and this daemon fills it from the local images through userfaultfd, on
 *   demand and in the background, so the workload runs again before its memory is all in place
 *   (256 MiB: resumed 0.14 s after the restore started, instead of ~1 s). It exits 0 when every
 *   page has been copied in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { readdir, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { ErrorCode, FerryError, silentLogger, type Logger } from '@ferry/protocol';
import { CRIU_FAULT_NO_BREAKPOINTS, CRIU_PATH_ENV, type CriuDriver, type CriuDumpRequest } from './criu-driver';
import { readCriuFailureDetails } from './criu-log';
import { criuTlsArgs, type PageServerTlsFiles } from './page-server-tls';

/** How long CRIU may take to become ready (listening, or serving lazy pages). */
export const SERVICE_START_TIMEOUT_MS = 10_000;
const PAGE_SERVER_LOG_NAME = 'page-server.log';
const LAZY_PAGES_LOG_NAME = 'lazy-pages.log';
/** The post-copy lazy-pages daemon's niceness (see LazyPagesDaemon.start). */
const LAZY_DAEMON_NICENESS = 10;
/** CRIU's --status-fd: it writes one byte there once its socket listens. */
const STATUS_FD = 3;

/** A port free on `address` right now. CRIU refuses port 0, so it cannot pick one itself. */
async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, address, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A long-running criu command (page-server, lazy-pages) that reports readiness on --status-fd. */
export class CriuService {
  private constructor(
    private readonly child: ChildProcess,
    /** Settles when criu exits: resolves on exit 0, rejects (TRANSFER_FAILED or `failCode`) otherwise. */
    readonly done: Promise<void>,
  ) {}

  /**
   * Runs `criu ARGS --status-fd 3 --log-file LOG` in `imagesDir`; resolves once criu says it is
   * ready, rejects (and kills it) if it exits or stays silent first.
   */
  static async start(
    criu: CriuDriver,
    imagesDir: string,
    args: string[],
    logName: string,
    failCode: ErrorCode,
    /** setpriority(2) value for the process, if not the agent's own. */
    niceness?: number,
    readyTimeoutMs = SERVICE_START_TIMEOUT_MS,
    /** Fds handed to criu after its status fd: passFds[i] is fd 4+i in criu. */
    passFds: number[] = [],
  ): Promise<CriuService> {
    const env: Record<string, string> = { PATH: CRIU_PATH_ENV };
    if (criu.options.faultInjection) env.CRIU_FAULT = CRIU_FAULT_NO_BREAKPOINTS;
    const fullArgs = [...args, '--status-fd', String(STATUS_FD), '--log-file', logName, `-v${criu.options.logLevel}`];
    const child = spawn(criu.options.criuPath, fullArgs, { cwd: imagesDir, env, stdio: ['ignore', 'ignore', 'pipe', 'pipe', ...passFds] });
    if (niceness !== undefined && child.pid !== undefined) {
      try {
        setPriority(child.pid, niceness);
      } catch {
        // Only a scheduling preference: the service works without it.
      }
    }
    const stderr: Buffer[] = [];
    child.stderr?.on('data', (c: Buffer) => stderr.push(c));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    const failure = async (what: string, code: ErrorCode): Promise<FerryError> => {
      const details = await readCriuFailureDetails(resolve(imagesDir, logName), Buffer.concat(stderr).toString('utf8'));
      return new FerryError(code, `criu ${args[0]} ${what}`, { details });
    };
    const done = exited.then(async ({ code, signal }) => {
      if (code !== 0) throw await failure(`exited ${signal ?? code}`, failCode);
    });
    done.catch(() => undefined);
    const status = child.stdio[STATUS_FD] as NodeJS.ReadableStream;
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      new Promise<boolean>((resolve) => status.once('data', () => resolve(true))),
      exited.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), readyTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ready) {
      child.kill('SIGKILL');
      throw await failure('did not become ready', ErrorCode.UNAVAILABLE);
    }
    return new CriuService(child, done);
  }

  /** Kills it (a rolled-back migration); harmless once it exited. */
  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

export class PageServer {
  private constructor(
    private readonly service: CriuService,
    readonly address: string,
    readonly port: number,
  ) {}

  /**
   * Starts `criu page-server` writing into `imagesDir`, listening on `address`; resolves once it
   * listens. With `tls`, it accepts only a client presenting a certificate of that CA and
   * encrypts the pages (page-server-tls.ts).
   */
  static async start(criu: CriuDriver, imagesDir: string, address: string, logger: Logger = silentLogger, tls?: PageServerTlsFiles): Promise<PageServer> {
    const port = await freePort(address);
    const args = ['page-server', '--images-dir', imagesDir, '--address', address, '--port', String(port), ...(tls ? criuTlsArgs(tls) : [])];
    const service = await CriuService.start(criu, imagesDir, args, PAGE_SERVER_LOG_NAME, ErrorCode.TRANSFER_FAILED);
    logger.debug({ address, port, tls: tls !== undefined }, 'criu page-server listening');
    return new PageServer(service, address, port);
  }

  /**
   * Starts `criu page-server` writing into `imagesDir` on an already connected socket (`--ps-socket`,
   * one end of a socket pair whose other end is the page tunnel's): nothing listens anywhere.
   * Resolves once it is ready; the caller may close its copy of `socketFd` then.
   */
  static async startOnSocket(criu: CriuDriver, imagesDir: string, socketFd: number, logger: Logger = silentLogger): Promise<PageServer> {
    // The socket is the criu process's fd 4 (after stdin, stdout, stderr and the status fd).
    const args = ['page-server', '--images-dir', imagesDir, '--ps-socket', '4'];
    const service = await CriuService.start(criu, imagesDir, args, PAGE_SERVER_LOG_NAME, ErrorCode.TRANSFER_FAILED, undefined, SERVICE_START_TIMEOUT_MS, [socketFd]);
    logger.debug({ imagesDir }, 'criu page-server ready on the page tunnel');
    return new PageServer(service, '', 0);
  }

  /** Resolves on exit 0 (every page written), rejects otherwise. */
  get done(): Promise<void> {
    return this.service.done;
  }

  stop(): void {
    this.service.stop();
  }
}

/**
 * Post-copy's source side where the probe allows it (CriuInfo.lazyDump): `criu dump --lazy-pages`.
 * CRIU freezes the tree, writes every image but the lazy memory, and then serves that memory
 * straight from the pipes it spliced it into, to the one client that connects to `address:port`
 * speaking its page-server protocol: the target's `criu lazy-pages`, or this agent relaying for it
 * (post-copy-source.ts). Nothing of the lazy memory is
 * written: the freeze lasts as long as dumping the rest, whatever the memory size.
 *
 * `ready` resolves when the images are written and the page server listens; `done` when the client
 * closed the session (PS_IOV_CLOSE) and criu exited 0, the tree left stopped (--leave-stopped) for
 * the agent to kill (release) or thaw (rollback). The log is written outside the images dir, which
 * is streamed while criu still writes to its log.
 */
export class LazyDump {
  private constructor(
    private readonly service: CriuService,
    readonly address: string,
    readonly port: number,
    readonly durationMs: number,
  ) {}

  /**
   * Dumps and listens on `address` (127.0.0.1 when only this agent will connect; the host's own
   * address when the target's CRIU may, then with `tls`: page-server-tls.ts, the roles swapped).
   */
  static async start(criu: CriuDriver, request: CriuDumpRequest, logPath: string, address = '127.0.0.1', tls?: PageServerTlsFiles): Promise<LazyDump> {
    const port = await freePort(address);
    return LazyDump.run(criu, request, logPath, ['--address', address, '--port', String(port), ...(tls ? criuTlsArgs(tls) : [])], [], address, port);
  }

  /**
   * The same, serving the lazy memory on an already connected socket (`--ps-socket`: one end of
   * a socket pair whose other end is the page tunnel's), nothing listening anywhere.
   */
  static async startOnSocket(criu: CriuDriver, request: CriuDumpRequest, logPath: string, socketFd: number): Promise<LazyDump> {
    // The socket is the criu process's fd 4 (after stdin, stdout, stderr and the status fd).
    return LazyDump.run(criu, request, logPath, ['--ps-socket', '4'], [socketFd], '', 0);
  }

  private static async run(criu: CriuDriver, request: CriuDumpRequest, logPath: string, serveArgs: string[], passFds: number[], address: string, port: number): Promise<LazyDump> {
    const started = performance.now();
    const { imagesDir, args } = await criu.prepareDump(request);
    const service = await CriuService.start(
      criu,
      imagesDir,
      [...args, '--lazy-pages', ...serveArgs],
      logPath,
      ErrorCode.CHECKPOINT_FAILED,
      undefined,
      // Ready means dumped: as long as a plain dump may take.
      criu.options.commandTimeoutMs,
      passFds,
    );
    return new LazyDump(service, address, port, performance.now() - started);
  }

  get done(): Promise<void> {
    return this.service.done;
  }

  /** Kills it. Its tree, no longer traced, stays stopped only by the agent's SIGSTOP (CriuDriver.holdStopped). */
  stop(): void {
    this.service.stop();
  }
}

/** `criu lazy-pages` serving a lazy restore from the images in `imagesDir`. */
export class LazyPagesDaemon {
  private constructor(private readonly service: CriuService) {}

  /**
   * Starts it; resolves once its socket for the restore is ready. With `pageServer` (post-copy)
   * it asks that page server for the lazy pages instead of reading them from the images.
   */
  static async start(
    criu: CriuDriver,
    imagesDir: string,
    /** With `relay`, the page server is ferry's relay, which fetches over NATS (see the niceness below). */
    pageServer?: { address: string; port: number; tls?: PageServerTlsFiles } | { socketFd: number; relay?: boolean },
  ): Promise<LazyPagesDaemon> {
    // On a socket (the page tunnel's pair), it is the criu process's fd 4, after the status fd.
    const remote = !pageServer
      ? []
      : 'socketFd' in pageServer
        ? ['--page-server', '--ps-socket', '4']
        : ['--page-server', '--address', pageServer.address, '--port', String(pageServer.port), ...(pageServer.tls ? criuTlsArgs(pageServer.tls) : [])];
    // The daemon polls without sleeping while a request to its page server is out (criu/uffd.c,
    // handle_requests). Against ferry's relay (pages fetched over NATS, ms each) it does so most of
    // the time: at a lower priority that spin yields the core to the agents fetching those pages.
    const service = await CriuService.start(
      criu,
      imagesDir,
      ['lazy-pages', '--images-dir', imagesDir, ...remote],
      LAZY_PAGES_LOG_NAME,
      ErrorCode.RESTORE_FAILED,
      pageServer && 'relay' in pageServer && pageServer.relay ? LAZY_DAEMON_NICENESS : undefined,
      SERVICE_START_TIMEOUT_MS,
      pageServer && 'socketFd' in pageServer ? [pageServer.socketFd] : [],
    );
    return new LazyPagesDaemon(service);
  }

  /** Resolves once every page is in the restored tree's memory (exit 0), rejects otherwise. */
  get done(): Promise<void> {
    return this.service.done;
  }

  stop(): void {
    this.service.stop();
  }
}

/** Bytes of CRIU's memory-page images (pages-N.img) in `imagesDir`: what a page server received. */
export async function sumPageImageBytes(imagesDir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(imagesDir)) {
    if (/^pages-\d+\.img$/.test(name)) total += (await stat(join(imagesDir, name))).size;
  }
  return total;
}
