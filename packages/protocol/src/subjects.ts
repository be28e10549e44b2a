/**
 * NATS subjects. Every subject starts with `ferry.v<version>` so two protocol versions can share
 * a server without reading each other's messages.
 */
import { PROTOCOL_VERSION } from './version';
import { ErrorCode, FerryError } from './errors';

const ROOT = `ferry.v${PROTOCOL_VERSION}`;

/** Requests one agent answers (request/reply). */
export const AgentVerb = {
  PROBE: 'probe',
  RUN: 'run',
  PS: 'ps',
  STOP: 'stop',
  /** Target: make a work dir and start receiving an image. */
  RECEIVE: 'receive',
  /** Source: freeze + dump the workload and stream the image to the target. */
  CHECKPOINT: 'checkpoint',
  /** Target: restore the received image. */
  RESTORE: 'restore',
  /** Source: the target confirmed; kill the frozen copy and clean up. */
  RELEASE: 'release',
  /** Source: something failed before the confirm; thaw the frozen copy. */
  RESUME: 'resume',
  /** Target: something failed; drop the received image and any restored copy. */
  DISCARD: 'discard',
  /** Target: the migration is over; the restored copy is no longer provisional. */
  SETTLE: 'settle',
  /** Source, pre-flight: `criu cpuinfo dump`; replies with the cpuinfo image. */
  CPUINFO: 'cpuinfo',
  /** Target, pre-flight: `criu cpuinfo check` against the source's cpuinfo image. */
  CPUINFO_CHECK: 'cpuinfo-check',
  /** What this agent's own record says of one migration (reconciliation after a coordinator restart). */
  MIGRATION_RECORD: 'migration-record',
  /** Source, pre-flight: can the workload's state move (its sockets, its unlinked files within the ghost limit)? Lists its local files. */
  MIGRATABLE: 'migratable',
  /** Target, pre-flight: does it have the source's local files (from `migratable`), the same (size, mtime, sha256)? */
  CHECK_FILES: 'check-files',
} as const;
export type AgentVerb = (typeof AgentVerb)[keyof typeof AgentVerb];

/** Requests the coordinator answers. */
export const CoordVerb = {
  HOSTS: 'hosts',
  PS: 'ps',
  RUN: 'run',
  STOP: 'stop',
  MIGRATE: 'migrate',
  STATUS: 'status',
  /** Mark a host unschedulable: no migration or placement targets it. */
  CORDON: 'cordon',
  UNCORDON: 'uncordon',
  /** Cordon a host and migrate every workload off it (results as `events.drain`). */
  DRAIN: 'drain',
  /** Recent lifecycle events the coordinator kept (newest last); any coordinator answers. */
  EVENTS: 'events',
} as const;
export type CoordVerb = (typeof CoordVerb)[keyof typeof CoordVerb];

const TOKEN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function token(kind: string, value: string): string {
  if (!TOKEN.test(value)) {
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid ${kind} ${JSON.stringify(value)}: use lowercase letters, digits, '-' and '_', at most 63`);
  }
  return value;
}

export const subjects = {
  agent: (host: string, verb: AgentVerb): string => `${ROOT}.agent.${token('host name', host)}.${verb}`,
  /**
   * Agent `host` publishes its heartbeats here (no reply). The host is in the subject so NATS
   * permissions can hold each agent to its own; the coordinator drops a body naming another host.
   */
  heartbeat: (host: string): string => `${ROOT}.coord.heartbeat.${token('host name', host)}`,
  /** What the coordinator subscribes to: every host's heartbeats. */
  allHeartbeats: (): string => `${ROOT}.coord.heartbeat.*`,
  /** Agent `host` registers here (request/reply); host in the subject for the same reason as heartbeats. */
  register: (host: string): string => `${ROOT}.coord.register.${token('host name', host)}`,
  /** What the coordinator serves: every host's registration. */
  allRegistrations: (): string => `${ROOT}.coord.register.*`,
  coord: (verb: CoordVerb): string => `${ROOT}.coord.${verb}`,
  event: (kind: string): string => `${ROOT}.events.${kind}`,
  /**
   * A target agent's transfer progress, under its own host: NATS lets an agent publish only its
   * own, and the coordinator counts it only for a migration into that host.
   */
  progress: (host: string): string => `${ROOT}.events.progress.${token('host name', host)}`,
  allProgress: (): string => `${ROOT}.events.progress.*`,
  allEvents: (): string => `${ROOT}.events.>`,
  xferData: (transferId: string): string => `${ROOT}.xfer.${token('transfer id', transferId)}.data`,
  xferAck: (transferId: string): string => `${ROOT}.xfer.${token('transfer id', transferId)}.ack`,
  xferCtl: (transferId: string): string => `${ROOT}.xfer.${token('transfer id', transferId)}.ctl`,
  /** Request/reply: the sender asks the receiver for a direct TCP endpoint (see @ferry/transfer). */
  xferDirect: (transferId: string): string => `${ROOT}.xfer.${token('transfer id', transferId)}.direct`,
  /** Request/reply, post-copy: the target asks the source for memory pages still on the source (see @ferry/transfer). */
  xferPages: (transferId: string): string => `${ROOT}.xfer.${token('transfer id', transferId)}.pages`,
};

/** True if `value` is usable as one subject token (host, workload, transfer id). */
export function isValidToken(value: string): boolean {
  return TOKEN.test(value);
}

/**
 * The host named by a heartbeat or registration subject (its last token), or null if `subject`
 * is neither: what the coordinator compares with the host a message's body claims.
 */
export function hostOfAgentSubject(subject: string): string | null {
  for (const prefix of [`${ROOT}.coord.heartbeat.`, `${ROOT}.coord.register.`, `${ROOT}.events.progress.`]) {
    if (subject.startsWith(prefix)) {
      const host = subject.slice(prefix.length);
      return TOKEN.test(host) ? host : null;
    }
  }
  return null;
}
