export { PROTOCOL_VERSION } from './version';
export * from './errors';
export { encode, decode, MAX_CONTROL_MESSAGE_BYTES } from './codec';
export { subjects, AgentVerb, CoordVerb, isValidToken, hostOfAgentSubject } from './subjects';
export * from './schemas';
export * from './agent-messages';
export * from './coordinator-messages';
export { PAGE_BYTES } from './memory-page';
export { PageServerTls, Pem, openPageServerTls, pageServerTlsKey, sealPageServerTls } from './page-server-tls';
export type { PageServerClientTls } from './page-server-tls';
export { SealKeyPair, SealPublicKey, SealedSecret, sealToAgent, SEAL_PUBLIC_KEY_BYTES } from './sealed-key';
export { WorkloadManifest, PinnedFile, MANIFEST_FILE, MAX_MANIFEST_BYTES } from './manifest';
export { LifecycleEvent, LifecycleStep } from './lifecycle-event';
export { request, serve, parseMessage, encodeError, DEFAULT_REQUEST_TIMEOUT_MS } from './rpc';
export type { RequestOptions, Handler, ServeOptions } from './rpc';
export {
  agentVerbs,
  coordVerbs,
  registerVerb,
  requestAgentVerb,
  serveAgentVerb,
  requestCoordVerb,
  serveCoordVerb,
  requestRegistration,
  serveRegistrations,
} from './verbs';
export type {
  VerbShape,
  VerbRequestBody,
  VerbReply,
  VerbResult,
  VerbHandler,
  AgentRequestBody,
  AgentReply,
  AgentVerbHandler,
  CoordRequestBody,
  CoordReply,
  CoordVerbHandler,
  RegisterHandler,
} from './verbs';
export { waitForHostsAlive } from './wait-for-hosts';
export { silentLogger } from './logger';
export type { Logger } from './logger';
export { workloadsDigest, DIGEST_RSS_GRANULARITY_BYTES, FULL_HEARTBEAT_EVERY } from './workloads-digest';
export { NatsCredentials, loadNatsCredentials, natsAuthOptions, natsAuthOptionsFromFile } from './nats-credentials';
export { KafkaCredentials, loadKafkaCredentials } from './kafka-credentials';
export {
  KafkaRequestAuth,
  signKafkaRequest,
  kafkaRequestAuthProblem,
  kafkaRequestSigningInput,
  loadKafkaRequestSigner,
  loadKafkaRequestKeys,
  MIN_REQUEST_KEY_BYTES,
  MAX_REQUEST_CLOCK_SKEW_MS,
} from './kafka-request-auth';
export type { KafkaRequestSigner, SignableKafkaRequest } from './kafka-request-auth';
