/** The CLI's connection to the cluster: NATS, found from the environment or the local dev cluster. */
import { existsSync, readFileSync } from 'node:fs';
import { connect, type NatsConnection } from 'nats';
import { CoordVerb, ErrorCode, FerryError, natsAuthOptionsFromFile, requestCoordVerb, waitForHostsAlive, type CoordReply, type CoordRequestBody } from '@ferry/protocol';

/** Where `ferry dev up` records the default cluster, so the CLI finds its NATS port. */
export const DEFAULT_DEV_STATE_FILE = '/run/ferry/dev/ferry/cluster.json';

export function resolveNatsUrl(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_NATS_URL) return env.FERRY_NATS_URL;
  if (existsSync(DEFAULT_DEV_STATE_FILE)) {
    try {
      const state = JSON.parse(readFileSync(DEFAULT_DEV_STATE_FILE, 'utf8')) as { natsUrl?: string };
      if (state.natsUrl) return state.natsUrl;
    } catch {
      // A half-written state file: fall through to the default port.
    }
  }
  return 'nats://127.0.0.1:4222';
}

/**
 * The operator credentials file: FERRY_NATS_CREDENTIALS, else the dev cluster's CLI credentials
 * when the URL is the dev cluster's (never another cluster's credentials for a URL given by hand),
 * else none (anonymous).
 */
export function resolveNatsCredentials(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.FERRY_NATS_CREDENTIALS) return env.FERRY_NATS_CREDENTIALS;
  if (!existsSync(DEFAULT_DEV_STATE_FILE)) return null;
  try {
    const state = JSON.parse(readFileSync(DEFAULT_DEV_STATE_FILE, 'utf8')) as { natsUrl?: string; credentials?: { cli?: string } };
    if (env.FERRY_NATS_URL && env.FERRY_NATS_URL !== state.natsUrl) return null;
    return state.credentials?.cli ?? null;
  } catch {
    return null;
  }
}

/**
 * A NATS URL (or comma-separated list) fit for an error message: credentials in it
 * (`nats://user:password@host`, `nats://token@host`) are replaced by `***`.
 */
export function redactNatsUrl(url: string): string {
  return url
    .split(',')
    .map((u) => u.replace(/^([a-z]+:\/\/)([^@/]*)@/i, (_m, scheme: string, auth: string) => `${scheme}${auth.includes(':') ? `${auth.split(':')[0]}:***` : '***'}@`))
    .join(',');
}

export async function connectCluster(natsUrl = resolveNatsUrl(), credentialsFile = resolveNatsCredentials()): Promise<NatsConnection> {
  // Outside the try: a missing or unreadable credentials file is its own error, not "cannot reach".
  const auth = natsAuthOptionsFromFile(credentialsFile);
  try {
    return await connect({ servers: natsUrl.split(','), name: 'ferry-cli', timeout: 3_000, ...auth });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'AUTHORIZATION_VIOLATION') {
      throw new FerryError(ErrorCode.FAILED_PRECONDITION, `NATS at ${redactNatsUrl(natsUrl)} refused our credentials (${credentialsFile ?? 'none given; set FERRY_NATS_CREDENTIALS'})`, { cause: err });
    }
    throw new FerryError(ErrorCode.UNAVAILABLE, `cannot reach NATS at ${redactNatsUrl(natsUrl)} (is the cluster up? try \`npx ferry dev up\`)`, { cause: err });
  }
}

/** One request to the coordinator over a short-lived connection; the reply is checked against the protocol's verb table. */
export async function askCoordinator<V extends CoordVerb>(verb: V, body: CoordRequestBody<V>, timeoutMs = 10_000): Promise<CoordReply<V>> {
  const nc = await connectCluster();
  try {
    return await requestCoordVerb(nc, verb, body, { timeoutMs });
  } catch (err) {
    if (err instanceof FerryError && err.code === ErrorCode.UNAVAILABLE && /no one answers/.test(err.message)) {
      throw new FerryError(ErrorCode.UNAVAILABLE, 'no coordinator is answering (is the cluster up? try `npx ferry dev up`)', { cause: err });
    }
    throw err;
  } finally {
    await nc.close();
  }
}

/**
 * Polls the coordinator until every named host is alive (`hosts add` waits so for the agent it
 * started); `credentialsFile`: the CLI's, or null for anonymous NATS. Unlike `connectCluster` it
 * keeps trying while NATS or the coordinator cannot be reached, until the deadline.
 */
export async function waitForHosts(natsUrl: string, hosts: string[], timeoutMs: number, credentialsFile: string | null): Promise<void> {
  const nc = await connect({
    servers: natsUrl,
    name: 'ferry-cli-wait',
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    ...natsAuthOptionsFromFile(credentialsFile),
  });
  try {
    await waitForHostsAlive(nc, hosts, timeoutMs);
  } finally {
    await nc.close();
  }
}
