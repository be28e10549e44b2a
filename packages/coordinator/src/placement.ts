/**
 * Placement: which host a workload should move to. Pure (no I/O, no clock) so it is unit-tested
 * and cheap enough to run for every workload of a drain over a thousand hosts.
 */
import { ErrorCode, FerryError } from '@ferry/protocol';

/**
 * Memory a target must have available per byte of the workload's RSS. CRIU restores every page
 * the dump wrote, and the kernel needs some room of its own while it does; the same factor is
 * used by the migration's pre-flight so placement never picks a host the pre-flight refuses.
 */
export const MEMORY_HEADROOM_FACTOR = 1.1;

/** What placement needs to know of one host (a snapshot, taken by the caller). */
export interface PlacementHost {
  name: string;
  alive: boolean;
  cordoned: boolean;
  criuUsable: boolean;
  availableBytes: number;
  /** Workloads running there now. */
  workloadCount: number;
  /** Migrations in flight towards it: they count as workloads and their RSS as used memory. */
  incoming: number;
  incomingBytes: number;
}

export interface PlacementWorkload {
  name: string;
  /** Where it runs now; never a candidate. */
  host: string;
  rssBytes: number;
}

export interface PlacementOptions {
  /** A host already receiving this many migrations is skipped (the per-target limit). */
  maxIncomingPerHost: number;
  /** Hosts to leave out for other reasons (e.g. failed a CPU check for this workload). */
  exclude?: ReadonlySet<string>;
}

export interface Placement {
  host: string;
  /** One line an operator reads: why this host, and why not the others. */
  reason: string;
}

/** Bytes a host needs available to take a workload of `rssBytes`. */
export function memoryNeeded(rssBytes: number): number {
  return Math.ceil(rssBytes * MEMORY_HEADROOM_FACTOR);
}

/**
 * Picks the target for `workload`: alive, not cordoned, CRIU usable, under the incoming limit,
 * enough memory after what is already on its way there; among those, the fewest workloads
 * (counting incoming ones), then the most free memory, then the name (deterministic).
 * Throws FAILED_PRECONDITION listing why each host was refused when none fits.
 */
export function placeWorkload(workload: PlacementWorkload, hosts: readonly PlacementHost[], options: PlacementOptions): Placement {
  const need = memoryNeeded(workload.rssBytes);
  const refused = new Map<string, string[]>();
  const refuse = (why: string, host: string) => {
    const list = refused.get(why);
    if (list) list.push(host);
    else refused.set(why, [host]);
  };
  let best: PlacementHost | null = null;
  let bestLoad = 0;
  let bestFree = 0;
  let candidates = 0;
  for (const h of hosts) {
    if (h.name === workload.host) continue;
    if (options.exclude?.has(h.name)) refuse('excluded', h.name);
    else if (!h.alive) refuse('lost', h.name);
    else if (h.cordoned) refuse('cordoned', h.name);
    else if (!h.criuUsable) refuse('CRIU unusable', h.name);
    else if (h.incoming >= options.maxIncomingPerHost) refuse(`at the limit of ${options.maxIncomingPerHost} incoming`, h.name);
    else if (h.availableBytes - h.incomingBytes < need) refuse(`under ${need} bytes free`, h.name);
    else {
      candidates++;
      const load = h.workloadCount + h.incoming;
      const free = h.availableBytes - h.incomingBytes;
      if (best === null || load < bestLoad || (load === bestLoad && (free > bestFree || (free === bestFree && h.name < best.name)))) {
        best = h;
        bestLoad = load;
        bestFree = free;
      }
    }
  }
  const refusals = [...refused.entries()].map(([why, names]) => `${why}: ${summarize(names)}`).join('; ');
  if (best === null) {
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `no host can take ${workload.name} (needs ${need} bytes free)${refusals ? `; ${refusals}` : '; no other hosts'}`,
    );
  }
  const reason =
    `${best.name}: ${bestLoad} workload(s) incl. incoming, ${bestFree} bytes free (needs ${need}); ` +
    `least loaded of ${candidates} eligible host(s)${refusals ? `; refused ${refusals}` : ''}`;
  return { host: best.name, reason };
}

/** A reason line must stay short with a thousand hosts. */
function summarize(names: string[]): string {
  const SHOWN = 5;
  return names.length <= SHOWN ? names.join(', ') : `${names.slice(0, SHOWN).join(', ')} and ${names.length - SHOWN} more`;
}
