export { PROTOCOL_VERSION } from './version';
export * from './errors';
export { encode, decode, MAX_CONTROL_MESSAGE_BYTES } from './codec';
export { subjects, AgentVerb, CoordVerb, isValidToken } from './subjects';
export * from './schemas';
export { request, serve, parseMessage, encodeError, DEFAULT_REQUEST_TIMEOUT_MS } from './rpc';
export type { RequestOptions, Handler, ServeOptions } from './rpc';
export { silentLogger } from './logger';
export type { Logger } from './logger';
