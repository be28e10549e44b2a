/**
 * Deliberate faults for failure tests, switched on only by an agent option (FERRY_FAULT_* in the
 * environment). They sit at the agent's edge, around the NATS connection, so the transfer and CRIU
 * code under test run exactly as in production.
 */
import type { NatsConnection } from 'nats';

export interface AgentFaults {
  /** Flip one byte in the payload of the N-th large image frame this agent sends (1-based). */
  corruptImageFrame?: number;
}

/** Frames this large carry chunk data, so a flipped byte in their middle lands in the data. */
const LARGE_FRAME_BYTES = 16 * 1024;

export function withFaults(nc: NatsConnection, faults: AgentFaults): NatsConnection {
  const target = faults.corruptImageFrame;
  if (!target) return nc;
  let large = 0;
  const publish = nc.publish.bind(nc);
  return new Proxy(nc, {
    get(obj, prop, receiver) {
      if (prop !== 'publish') return Reflect.get(obj, prop, receiver);
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
