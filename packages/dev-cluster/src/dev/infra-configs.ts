/** Transfer chunks can be large; nats-server's default max_payload is 1 MB. */
export const NATS_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

export interface NatsConfigOptions {
  listenAddress: string;
  port: number;
}

/** nats-server configuration for a dev cluster: core NATS only (no JetStream), large payloads. */
export function natsServerConfig(options: NatsConfigOptions): string {
  return [
    `listen: "${options.listenAddress}:${options.port}"`,
    `max_payload: ${NATS_MAX_PAYLOAD_BYTES}`,
    // max_pending must stay >= max_payload; 64 MB is nats-server's default, stated so it is visible.
    `max_pending: ${64 * 1024 * 1024}`,
    '',
  ].join('\n');
}

export interface RedisConfigOptions {
  bindAddresses: string[];
  port: number;
  dir: string;
}

/** redis-server configuration for a dev cluster: memory only, reachable on loopback and the bridge. */
export function redisServerConfig(options: RedisConfigOptions): string {
  return [
    `bind ${options.bindAddresses.join(' ')}`,
    `port ${options.port}`,
    // Hosts connect from the bridge subnet without a password; the bind list is the fence.
    'protected-mode no',
    'save ""',
    'appendonly no',
    `dir ${options.dir}`,
    'daemonize no',
    // Empty: log to stdout, which goes to our log file.
    'logfile ""',
    '',
  ].join('\n');
}
