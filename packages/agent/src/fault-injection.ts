/**
 * Deliberate faults for failure tests, switched on only by an agent option (FERRY_FAULT_* in the
 * environment). They sit at the agent's edge, around the NATS connection, so the transfer and CRIU
 * code under test run exactly as in production.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Msg, NatsConnection, SubscriptionOptions } from 'nats';
import { encode, ErrorCode, MANIFEST_FILE, PROTOCOL_VERSION, type WorkloadInfo } from '@ferry/protocol';
import { encodePagemap, parsePagemap, PE_LAZY, withNrPages } from './criu/pagemap-image';

export interface AgentFaults {
  /** Flip one byte in the payload of the N-th large image frame this agent sends (1-based). */
  corruptImageFrame?: number;
  /** Post-copy source: answer the first N page requests, refuse every later one (a source that fails mid-pull). */
  refusePageRequestsAfter?: number;
  /**
   * Report pipeData false whatever the probe found, as a host whose kernel refuses CRIU's pipe
   * refill would (the refusal path is otherwise unreachable on a kernel that takes it).
   */
  noPipeData?: boolean;
  /**
   * A compromised source (FERRY_FAULT_MANIFEST_PATCH, JSON): per workload name, an object merged
   * into the manifest this agent sends with that workload's image (a log path, pins, an address or
   * mounts the target must not act on). Keyed by workload so one agent carries several attacks and
   * its other workloads still migrate honestly.
   */
  manifestPatch?: Record<string, Record<string, unknown>>;
  /**
   * A compromised source (FERRY_FAULT_HUGE_PAGEMAP, comma-separated workload names): their images
   * leave with the first lazy run of the first task's pagemap (else its first run) claiming
   * HUGE_PAGEMAP_PAGES pages, 4 PiB, which a target that believed it would try to plan or allocate.
   */
  hugePagemap?: string[];
  /**
   * A compromised agent (FERRY_FAULT_SHADOW_WORKLOAD=NAME): its workload lists (heartbeats and the
   * PS verb) carry a running workload of that name on its own host, though none runs there: an
   * impostor of another host's real workload.
   */
  shadowWorkload?: string;
}

/** nr_pages of the rewritten pagemap record (hugePagemap): 2^40 pages, 4 PiB. */
export const HUGE_PAGEMAP_PAGES = 2 ** 40;

/** Frames this large carry chunk data, so a flipped byte in their middle lands in the data. */
const LARGE_FRAME_BYTES = 16 * 1024;

export function withFaults(nc: NatsConnection, faults: AgentFaults): NatsConnection {
  const target = faults.corruptImageFrame;
  const pagesAllowed = faults.refusePageRequestsAfter;
  if (!target && pagesAllowed === undefined) return nc;
  let large = 0;
  let pageRequests = 0;
  const publish = nc.publish.bind(nc);
  const subscribe = nc.subscribe.bind(nc);
  return new Proxy(nc, {
    get(obj, prop, receiver) {
      if (prop === 'subscribe' && pagesAllowed !== undefined) {
        return (subject: string, opts?: SubscriptionOptions) => {
          const callback = opts?.callback;
          if (!subject.endsWith('.pages') || !callback) return subscribe(subject, opts);
          return subscribe(subject, {
            ...opts,
            callback: (err, msg: Msg) => {
              if (err || ++pageRequests <= pagesAllowed) return callback(err, msg);
              msg.respond(encode({ v: PROTOCOL_VERSION, t: 'error', code: ErrorCode.UNAVAILABLE, message: 'page requests refused (fault injection)' }));
            },
          });
        };
      }
      if (prop !== 'publish' || !target) return Reflect.get(obj, prop, receiver);
      return (subject: string, data?: Uint8Array, opts?: unknown) => {
        if (data && subject.endsWith('.data') && data.byteLength >= LARGE_FRAME_BYTES && ++large === target) {
          const copy = Uint8Array.from(data);
          copy[copy.length >> 1] ^= 0xff;
          return publish(subject, copy, opts as never);
        }
        return publish(subject, data, opts as never);
      };
    },
  });
}

/**
 * The image in `dir` as a compromised source would send `workload`'s (manifestPatch, hugePagemap).
 * Applied after the source wrote its images and before they go out; resolves to the undo, which
 * puts this host's own files back once they went, so the source's cleanup acts on its honest
 * manifest (the target's handling of the hostile one is what is under test).
 */
export async function compromiseImage(dir: string, workload: string, faults: AgentFaults): Promise<() => Promise<void>> {
  const originals = new Map<string, Buffer>();
  const rewrite = async (name: string, edit: (bytes: Buffer) => Buffer) => {
    const path = join(dir, name);
    const bytes = await readFile(path);
    originals.set(path, bytes);
    await writeFile(path, edit(bytes));
  };
  const patch = faults.manifestPatch?.[workload];
  if (patch) await rewrite(MANIFEST_FILE, (bytes) => Buffer.from(JSON.stringify({ ...JSON.parse(bytes.toString('utf8')), ...patch })));
  if (faults.hugePagemap?.includes(workload)) {
    const first = (await readdir(dir))
      .map((name) => /^pagemap-(\d+)\.img$/.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .sort((a, b) => Number(a[1]) - Number(b[1]))[0];
    if (first) {
      await rewrite(first[0], (bytes) => {
        const image = parsePagemap(bytes);
        const at = Math.max(0, image.entries.findIndex((e) => (e.flags & PE_LAZY) !== 0));
        return encodePagemap(image, image.entries.map((e, i) => (i === at ? withNrPages(e, HUGE_PAGEMAP_PAGES) : e.raw)));
      });
    }
  }
  return async () => {
    for (const [path, bytes] of originals) await writeFile(path, bytes);
  };
}

/** `list` with the impostor entry of shadowWorkload added (once no real workload of this host has the name). */
export function withShadowWorkload(list: () => Promise<WorkloadInfo[]>, host: string, faults: AgentFaults): () => Promise<WorkloadInfo[]> {
  const name = faults.shadowWorkload;
  if (!name) return list;
  const startedAt = new Date().toISOString();
  return async () => {
    const real = await list();
    if (real.some((w) => w.name === name)) return real;
    return [...real, { name, host, state: 'running', pid: process.pid, rssBytes: 4096, argv: ['impostor'], startedAt, mounts: [], localDirs: [] }];
  };
}
