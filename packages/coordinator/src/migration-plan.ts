/**
 * The one place a migration's data path and restore mode are decided; the agents carry out what
 * they are told (CheckpointRequest.memory and .transport, RestoreRequest.mode) or fail.
 *
 * Which data path a migration's image takes, decided before anything is frozen from the two
 * hosts' CRIU probes. Measured by `npm run bench` (bench/results.md): `auto` (and `direct`) stream
 * the dump where both hosts can (`criu dump --stream` through the source agent, the pages sealed
 * onto the direct connection by the native pump while CRIU dumps: the dump and the transfer
 * overlap); else ferry's page tunnel, CRIU's page server over mutual TLS, or the dumped image on
 * ferry's sealed stream, in that order. `auto` never sends a workload's memory in clear.
 */
import { ErrorCode, FerryError, type CriuInfo, type MemoryPath, type RestoreMode, type StreamTransport, type Transport, type TransportPreference } from '@ferry/protocol';

/**
 * The restore mode of a migration. Asked for explicitly, it is that or an error (before anything
 * is frozen); else the cluster's default (FERRY_DEFAULT_RESTORE) where the target's probe and the
 * transport allow it, stepping down post-copy -> lazy -> eager. Without a default: lazy where
 * allowed. Post-copy is never the built-in default: until the last page has moved the workload
 * depends on its source host, and a source that dies then takes it along.
 */
export function chooseRestoreMode(
  explicit: RestoreMode | undefined,
  clusterDefault: RestoreMode | null,
  target: Pick<CriuInfo, 'lazyPages'> & Partial<Pick<CriuInfo, 'unprivilegedUserfaultfd'>>,
  targetName: string,
  transport: TransportPreference,
  workload: { user?: unknown } = {},
): RestoreMode {
  // A workload run as another user is restored inside its own user namespace, where CRIU's
  // userfaultfd is refused unless the kernel lets unprivileged users have one
  // (vm.unprivileged_userfaultfd, 0 on Debian and here, the target's probe says): else it restores eagerly.
  const isolated = workload.user !== undefined && target.unprivilegedUserfaultfd !== true;
  const lazyOk = target.lazyPages === true && !isolated;
  if (explicit !== undefined) {
    if ((explicit === 'lazy' || explicit === 'post-copy') && !lazyOk) {
      throw new FerryError(
        ErrorCode.FAILED_PRECONDITION,
        isolated
          ? `a workload run with --user cannot restore ${explicit === 'lazy' ? 'lazily' : 'by post-copy'} on ${targetName}: it restores in its own user namespace, where the kernel refuses CRIU's userfaultfd (vm.unprivileged_userfaultfd=0 there); migrate it with --restore eager, or set vm.unprivileged_userfaultfd=1 on ${targetName} and restart its agent`
          : `${targetName} cannot restore lazily (its CRIU probe found no userfaultfd support)`,
      );
    }
    if (explicit === 'post-copy' && isPagePath(transport)) {
      // A page path carries every page during the dump, which is what post-copy avoids.
      throw new FerryError(ErrorCode.INVALID_ARGUMENT, `post-copy keeps the memory on the source; it cannot go with the ${transport} transport`);
    }
    return explicit;
  }
  if (clusterDefault === 'post-copy' && lazyOk && !isPagePath(transport)) return 'post-copy';
  if (clusterDefault === 'eager') return 'eager';
  return lazyOk ? 'lazy' : 'eager';
}

/** Transports that move the memory pages during the dump, by CRIU's page-server protocol. */
function isPagePath(transport: TransportPreference): boolean {
  return transport === 'page-server' || transport === 'page-tunnel';
}

/** Both ends can carry the memory through ferry's page tunnel (--ps-socket and the native sealed pump). */
export function bothPageTunnel(source: Pick<CriuInfo, 'pageTunnel'>, target: Pick<CriuInfo, 'pageTunnel'>): boolean {
  return source.pageTunnel === true && target.pageTunnel === true;
}

/** Both ends can stream a dump: `criu dump --stream` through the source agent onto ferry's pumped stream. */
export function bothStream(source: Pick<CriuInfo, 'stream'>, target: Pick<CriuInfo, 'stream'>): boolean {
  return source.stream === true && target.stream === true;
}

/** Both ends can run the page server over TLS. */
export function bothPageServerTls(source: Pick<CriuInfo, 'pageServerTls'>, target: Pick<CriuInfo, 'pageServerTls'>): boolean {
  return source.pageServerTls === true && target.pageServerTls === true;
}

/**
 * The transport the agents are asked for: `auto` becomes ferry's page tunnel where both ends have
 * it (the memory sealed natively at memory speed while CRIU dumps), else CRIU's page server where
 * both can encrypt it; never in post-copy, where the memory stays on the source and only the small
 * images travel. A page path asked for by name is refused where an end cannot do it.
 */
export function chooseTransport(
  wanted: TransportPreference,
  source: Pick<CriuInfo, 'pageServerTls' | 'pageTunnel'>,
  target: Pick<CriuInfo, 'pageServerTls' | 'pageTunnel'>,
  { postCopy = false }: { postCopy?: boolean } = {},
): TransportPreference {
  if (wanted === 'page-tunnel' && !bothPageTunnel(source, target)) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, 'the page tunnel needs both hosts to have it (CRIU with --ps-socket and the agent\'s native sealed pump)');
  }
  if (wanted !== 'auto' || postCopy) return wanted;
  if (bothPageTunnel(source, target)) return 'page-tunnel';
  if (bothPageServerTls(source, target)) return 'page-server';
  return wanted;
}

/** How one migration moves: decided before anything is frozen, from both hosts' probes. */
export interface DataPathPlan {
  /** How the memory leaves the source (see the agent's migration/source-data-paths.ts). */
  memory: MemoryPath;
  /** ferry's sealed stream for the image files (all of them with `image`): direct, NATS, or direct when reachable. */
  stream: StreamTransport;
  /** Start a page server on the target (memory `page-server`), over mutual TLS when `pageServerTls`. */
  pageServer: boolean;
  pageServerTls: boolean;
  /** Open ferry's page tunnel on the target: for a page server (memory `page-tunnel`), or with `lazyPageTunnel` for post-copy's lazy pages. */
  pageTunnel: boolean;
  /**
   * Post-copy by CRIU's lazy dump through the page tunnel: the target's `criu lazy-pages` asks the
   * source's lazy dump over it (both ends have the tunnel, and the stream was not pinned to NATS,
   * which keeps the relay through NATS for clusters whose hosts do not reach each other).
   */
  lazyPageTunnel: boolean;
  /**
   * Memory pre-copy (memory `stream`, both hosts able: CriuInfo.memoryPrecopy): the memory crosses
   * while the workload runs, and the freeze sends only the pages that changed since.
   */
  precopyMemory: boolean;
}

/** Both ends can pre-copy memory and rebuild pages from a delta. */
export function bothMemoryPrecopy(source: Partial<Pick<CriuInfo, 'memoryPrecopy'>>, target: Partial<Pick<CriuInfo, 'memoryPrecopy'>>): boolean {
  return source.memoryPrecopy === true && target.memoryPrecopy === true;
}

/**
 * The data path of a migration whose restore mode is decided: the transport the caller wanted
 * (chooseTransport), and for post-copy CRIU's own lazy dump where the source's probe allows it,
 * except for workloads with a service address (their network lock's life around a lazy dump is
 * untested), which take the rewritten dump.
 */
export function planDataPath(
  wanted: TransportPreference,
  restore: RestoreMode,
  source: Pick<CriuInfo, 'pageServerTls' | 'pageTunnel' | 'lazyDump' | 'stream'> & Partial<Pick<CriuInfo, 'memoryPrecopy'>>,
  target: Pick<CriuInfo, 'pageServerTls' | 'pageTunnel' | 'stream'> & Partial<Pick<CriuInfo, 'memoryPrecopy'>>,
  workload: { address?: string | undefined },
): DataPathPlan {
  const postCopy = restore === 'post-copy';
  const transport = chooseTransport(wanted, source, target, { postCopy });
  const stream: StreamTransport = isPagePath(transport) ? 'auto' : (transport as StreamTransport);
  if (postCopy) {
    const memory: MemoryPath = source.lazyDump && workload.address === undefined ? 'lazy-dump' : 'lazy-rewrite';
    const lazyPageTunnel = memory === 'lazy-dump' && stream !== 'nats' && bothPageTunnel(source, target);
    return { memory, stream, pageServer: false, pageServerTls: false, pageTunnel: lazyPageTunnel, lazyPageTunnel, precopyMemory: false };
  }
  const none = { pageServer: false, pageServerTls: false, pageTunnel: false, lazyPageTunnel: false, precopyMemory: false };
  // A streamed dump wherever both can: the pages leave while CRIU dumps and never touch the
  // source's disk, pumped and sealed at memory speed on the direct path (the fastest measured,
  // bench/results.md), in sealed chunk frames through nats-server; a page path named wins.
  if ((wanted === 'auto' || wanted === 'direct' || wanted === 'nats') && bothStream(source, target)) {
    // Pre-copy where both can: the freeze then carries only what changed (bench/results.md).
    return { ...none, memory: 'stream', stream: wanted, precopyMemory: bothMemoryPrecopy(source, target) };
  }
  if (transport === 'page-tunnel') return { ...none, memory: 'page-tunnel', stream, pageTunnel: true };
  if (transport === 'page-server') return { ...none, memory: 'page-server', stream, pageServer: true, pageServerTls: bothPageServerTls(source, target) };
  return { ...none, memory: 'image', stream };
}

/** The transport a migration reports before its checkpoint answers: the page path, or the stream when it was named. */
export function plannedTransport(plan: DataPathPlan, current: Transport): Transport {
  if (plan.memory === 'page-tunnel' || plan.memory === 'page-server') return plan.memory;
  return plan.stream === 'auto' ? current : plan.stream;
}

/**
 * A dump rate far below any measured here (tmpfs 0.4-0.5 GB/s, the page server over TLS ~0.3 GB/s):
 * how slowly a dump may go before the target gives up waiting for the image's first frame.
 */
export const MIN_DUMP_BYTES_PER_S = 50 * 1024 * 1024;

/**
 * How long the target waits for the first frame of the image: the source sends nothing until
 * CRIU has dumped (with the page server: until every memory page went that way), so the idle
 * timeout alone would cut off large workloads. Bounded by the checkpoint's own deadline.
 */
export function firstFrameTimeoutMs(idleTimeoutMs: number, rssBytes: number, checkpointTimeoutMs: number): number {
  const dumpAllowanceMs = Math.ceil((Math.max(0, rssBytes) / MIN_DUMP_BYTES_PER_S) * 1000);
  return Math.max(idleTimeoutMs, Math.min(idleTimeoutMs + dumpAllowanceMs, checkpointTimeoutMs));
}
