/**
 * Deliberate faults for failure tests, switched on only by an agent option (FERRY_FAULT_* in the
 * environment). They sit at the agent's edge, around the NATS connection, so the transfer and CRIU
 * code under test run exactly as in production.
 */
import type { Msg, NatsConnection, SubscriptionOptions } from 'nats';
import { encode, ErrorCode, PROTOCOL_VERSION } from '@ferry/protocol';

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
}

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
