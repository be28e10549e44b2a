/**
 * Heartbeats carry a digest of the host's workload list and the list itself only when the digest
 * changed (or every few beats): a thousand hosts beating once a second with twenty workloads each
 * would otherwise cost the coordinator most of a core in decoding and validation alone.
 */
import type { WorkloadInfo } from './schemas';

/** RSS moves a little on every beat; the digest ignores changes smaller than this. */
export const DIGEST_RSS_GRANULARITY_BYTES = 16 * 1024 * 1024;
/** An agent sends its full list at least this often (in beats), even when nothing changed. */
export const FULL_HEARTBEAT_EVERY = 10;

/** FNV-1a (32 bit) over name, state, pid and coarse RSS of each workload, in list order. Pure, no I/O. */
export function workloadsDigest(workloads: readonly Pick<WorkloadInfo, 'name' | 'state' | 'pid' | 'rssBytes'>[]): string {
  let h = 0x811c9dc5;
  const mix = (s: string) => {
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  };
  for (const w of workloads) mix(`${w.name}\u0000${w.state}\u0000${w.pid}\u0000${Math.round(w.rssBytes / DIGEST_RSS_GRANULARITY_BYTES)}\u0001`);
  return `${workloads.length.toString(36)}-${h.toString(16).padStart(8, '0')}`;
}
