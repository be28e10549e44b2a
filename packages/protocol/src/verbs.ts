/**
 * The verb table: every request/reply verb with the schema of its request and of its reply, in
 * one place both sides use (as nats.js keeps each verb's shape). The helpers below are rpc.ts's
 * request() and serve() with the schemas taken from the table, so a caller cannot check a reply
 * against another verb's schema, and a handler's return is checked against what its callers parse.
 */
import type { Msg, NatsConnection, Subscription } from 'nats';
import type { z } from 'zod';
import {
  CheckpointReply,
  CheckpointRequest,
  CheckFilesReply,
  CheckFilesRequest,
  MigratableReply,
  MigratableRequest,
  CpuinfoCheckReply,
  CpuinfoCheckRequest,
  CpuinfoReply,
  MigrationRecordReply,
  MigrationRef,
  ProbeReply,
  ReceiveReply,
  ReceiveRequest,
  RestoreReply,
  RestoreRequest,
  RunReply,
  RunRequest,
  WorkloadListReply,
} from './agent-messages';
import {
  CoordRunRequest,
  DrainReply,
  DrainRequest,
  EventsReply,
  EventsRequest,
  HostReply,
  HostRequest,
  HostsReply,
  MigrateReply,
  MigrateRequest,
  RegisterReply,
  RegisterRequest,
  StatusReply,
  StatusRequest,
} from './coordinator-messages';
import { request, serve, type Handler, type RequestOptions, type ServeOptions } from './rpc';
import { EmptyReply, EmptyRequest, NameRequest } from './schemas';
import { AgentVerb, CoordVerb, subjects } from './subjects';

/** What a verb takes and what it answers. Both are objects: rpc.ts spreads them into its envelope. */
export interface VerbShape {
  readonly request: z.ZodType<Record<string, unknown>>;
  readonly reply: z.ZodType<Record<string, unknown>>;
}

/** The agent's verbs (subjects.agent(host, verb)). */
export const agentVerbs = {
  [AgentVerb.PROBE]: { request: EmptyRequest, reply: ProbeReply },
  [AgentVerb.RUN]: { request: RunRequest, reply: RunReply },
  [AgentVerb.PS]: { request: EmptyRequest, reply: WorkloadListReply },
  [AgentVerb.STOP]: { request: NameRequest, reply: EmptyReply },
  [AgentVerb.RECEIVE]: { request: ReceiveRequest, reply: ReceiveReply },
  [AgentVerb.CHECKPOINT]: { request: CheckpointRequest, reply: CheckpointReply },
  [AgentVerb.RESTORE]: { request: RestoreRequest, reply: RestoreReply },
  [AgentVerb.RELEASE]: { request: MigrationRef, reply: EmptyReply },
  [AgentVerb.RESUME]: { request: MigrationRef, reply: EmptyReply },
  [AgentVerb.DISCARD]: { request: MigrationRef, reply: EmptyReply },
  [AgentVerb.SETTLE]: { request: MigrationRef, reply: EmptyReply },
  [AgentVerb.CPUINFO]: { request: EmptyRequest, reply: CpuinfoReply },
  [AgentVerb.CPUINFO_CHECK]: { request: CpuinfoCheckRequest, reply: CpuinfoCheckReply },
  [AgentVerb.MIGRATION_RECORD]: { request: MigrationRef, reply: MigrationRecordReply },
  [AgentVerb.MIGRATABLE]: { request: MigratableRequest, reply: MigratableReply },
  [AgentVerb.CHECK_FILES]: { request: CheckFilesRequest, reply: CheckFilesReply },
} as const satisfies Record<AgentVerb, VerbShape>;

/** The coordinator's verbs (subjects.coord(verb)), as the CLI, the HTTP API and Kafka send them. */
export const coordVerbs = {
  [CoordVerb.HOSTS]: { request: EmptyRequest, reply: HostsReply },
  [CoordVerb.PS]: { request: EmptyRequest, reply: WorkloadListReply },
  [CoordVerb.RUN]: { request: CoordRunRequest, reply: RunReply },
  [CoordVerb.STOP]: { request: NameRequest, reply: EmptyReply },
  [CoordVerb.MIGRATE]: { request: MigrateRequest, reply: MigrateReply },
  [CoordVerb.STATUS]: { request: StatusRequest, reply: StatusReply },
  [CoordVerb.CORDON]: { request: HostRequest, reply: HostReply },
  [CoordVerb.UNCORDON]: { request: HostRequest, reply: HostReply },
  [CoordVerb.DRAIN]: { request: DrainRequest, reply: DrainReply },
  [CoordVerb.EVENTS]: { request: EventsRequest, reply: EventsReply },
} as const satisfies Record<CoordVerb, VerbShape>;

/** An agent's registration with the coordinator (subjects.register(host)). */
export const registerVerb = { request: RegisterRequest, reply: RegisterReply } as const satisfies VerbShape;

type AgentVerbs = typeof agentVerbs;
type CoordVerbs = typeof coordVerbs;
type RegisterVerb = typeof registerVerb;

/** A request as its sender writes it: without `v` (request() adds it), fields with defaults optional. */
export type VerbRequestBody<T extends VerbShape> = Omit<z.input<T['request']>, 'v'>;
/** A reply as its caller gets it, parsed (defaults filled in). */
export type VerbReply<T extends VerbShape> = z.output<T['reply']>;
/** What a handler returns: the reply before parsing; nothing when `{}` is a valid reply. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- `{} extends X` asks whether every field of X is optional
export type VerbResult<T extends VerbShape> = {} extends z.input<T['reply']> ? z.input<T['reply']> | void : z.input<T['reply']>;
/** Answers one parsed request. */
export type VerbHandler<T extends VerbShape> = (req: z.output<T['request']>, msg: Msg) => Promise<VerbResult<T>>;

export type AgentRequestBody<V extends AgentVerb> = VerbRequestBody<AgentVerbs[V]>;
export type AgentReply<V extends AgentVerb> = VerbReply<AgentVerbs[V]>;
export type AgentVerbHandler<V extends AgentVerb> = VerbHandler<AgentVerbs[V]>;
export type CoordRequestBody<V extends CoordVerb> = VerbRequestBody<CoordVerbs[V]>;
export type CoordReply<V extends CoordVerb> = VerbReply<CoordVerbs[V]>;
export type CoordVerbHandler<V extends CoordVerb> = VerbHandler<CoordVerbs[V]>;
export type RegisterHandler = VerbHandler<RegisterVerb>;

function requestVerb<T extends VerbShape>(nc: NatsConnection, subject: string, shape: T, body: VerbRequestBody<T>, options?: RequestOptions): Promise<VerbReply<T>> {
  return request(nc, subject, body as Record<string, unknown>, shape.reply, options) as Promise<VerbReply<T>>;
}

function serveVerb<T extends VerbShape>(nc: NatsConnection, subject: string, shape: T, handler: VerbHandler<T>, options?: ServeOptions): Subscription {
  // VerbResult<T> is an object or nothing, as Handler wants; TypeScript cannot see it through the conditional type.
  return serve(nc, subject, shape.request, handler as Handler<T['request']>, options);
}

/** Asks agent `host` for `verb`; resolves with the reply checked against the table's reply schema. */
export function requestAgentVerb<V extends AgentVerb>(
  nc: NatsConnection,
  host: string,
  verb: V,
  body: AgentRequestBody<V>,
  options?: RequestOptions,
): Promise<AgentReply<V>> {
  return requestVerb(nc, subjects.agent(host, verb), agentVerbs[verb], body, options);
}

/** Agent `host` answers `verb`: requests checked against the table, the handler's reply typed by it. */
export function serveAgentVerb<V extends AgentVerb>(
  nc: NatsConnection,
  host: string,
  verb: V,
  handler: AgentVerbHandler<V>,
  options?: ServeOptions,
): Subscription {
  return serveVerb(nc, subjects.agent(host, verb), agentVerbs[verb], handler, options);
}

/** Asks the coordinator (the leader) for `verb`; resolves with the reply checked against the table. */
export function requestCoordVerb<V extends CoordVerb>(
  nc: NatsConnection,
  verb: V,
  body: CoordRequestBody<V>,
  options?: RequestOptions,
): Promise<CoordReply<V>> {
  return requestVerb(nc, subjects.coord(verb), coordVerbs[verb], body, options);
}

/** The coordinator answers `verb`: requests checked against the table, the handler's reply typed by it. */
export function serveCoordVerb<V extends CoordVerb>(nc: NatsConnection, verb: V, handler: CoordVerbHandler<V>, options?: ServeOptions): Subscription {
  return serveVerb(nc, subjects.coord(verb), coordVerbs[verb], handler, options);
}

/** Agent side: registers `host` with the coordinator; resolves with the coordinator's RegisterReply. */
export function requestRegistration(
  nc: NatsConnection,
  host: string,
  body: VerbRequestBody<RegisterVerb>,
  options?: RequestOptions,
): Promise<VerbReply<RegisterVerb>> {
  return requestVerb(nc, subjects.register(host), registerVerb, body, options);
}

/**
 * Coordinator side: answers every host's registration (subjects.allRegistrations()). The handler
 * gets the message too: the host its subject names must be the one the body claims.
 */
export function serveRegistrations(nc: NatsConnection, handler: RegisterHandler, options?: ServeOptions): Subscription {
  return serveVerb(nc, subjects.allRegistrations(), registerVerb, handler, options);
}
