/**
 * A throwaway local cluster per test file: its own name, subnet and ports, so nothing collides with
 * `npm start`'s cluster or another test; `stop()` removes every process, namespace and mount.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { readDevHttpToken, startLocalCluster, stopLocalCluster, type LocalClusterOptions } from '@ferry/dev-cluster';
import { natsAuthOptionsFromFile } from '@ferry/protocol';
import type { JsonDoc } from './json-doc';

type DevClusterState = Awaited<ReturnType<typeof startLocalCluster>>;

const exec = promisify(execFile);
export const REPO = join(__dirname, '..', '..');
const FERRY_BIN = join(REPO, 'packages', 'cli', 'bin', 'ferry.js');

const UNPRIVILEGED_USERFAULTFD = '/proc/sys/vm/unprivileged_userfaultfd';

/**
 * Sets vm.unprivileged_userfaultfd to 1 (0 on Debian), so a `--user` workload can restore lazily and
 * by post-copy (its restorer makes the userfaultfd in its own user namespace); returns what puts the
 * value back. Before starting a cluster: the agents probe it when they start.
 */
export async function allowUnprivilegedUserfaultfd(): Promise<() => Promise<void>> {
  const before = (await readFile(UNPRIVILEGED_USERFAULTFD, 'utf8')).trim();
  await writeFile(UNPRIVILEGED_USERFAULTFD, '1');
  return () => writeFile(UNPRIVILEGED_USERFAULTFD, before);
}

export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}

/**
 * `count` distinct free ports: all held open at once, then released. One at a time, the kernel may
 * hand the same port out twice (a full run once got NATS and Redis both on 34143).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (srv) =>
          new Promise<number>((resolve, reject) => {
            srv.once('error', reject);
            srv.listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((srv) => new Promise((resolve) => (srv.listening ? srv.close(resolve) : resolve(undefined)))));
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json: JsonDoc;
}

export interface TestCluster {
  name: string;
  natsUrl: string;
  nc: NatsConnection;
  /** The coordinator's metrics + HTTP API server, e.g. http://127.0.0.1:PORT (a free port per cluster). */
  httpUrl: string;
  /** The cluster's HTTP API tokens (`dev up` makes them; the coordinator knows only their hashes). */
  httpTokens: { viewer: string; operator: string };
  /** The coordinator's tokens file (hashes), re-read when it changes: tests rotate tokens by rewriting it. */
  httpTokensFile: string;
  /** host:port of the cluster's Kafka broker when started with `kafka: true`. */
  kafkaBrokers: string | null;
  /** The broker's CA and each Kafka principal's credentials files (SASL/SCRAM over TLS), as cluster.json records them. */
  kafka: DevClusterState['kafka'] | null;
  /** Each role's NATS credentials file (`nc` uses admin's, `ferry()` the CLI's); null with `natsAuth: false`. */
  credentials: { coordinator: string; cli: string; admin: string; agents: Record<string, string> } | null;
  /** Runs the real `ferry` CLI against this cluster. */
  ferry(args: string[], timeoutMs?: number): Promise<CliResult>;
  stop(): Promise<void>;
}

export async function startTestCluster(name: string, subnetIndex: number, opts: Partial<LocalClusterOptions> = {}): Promise<TestCluster> {
  // Never the default 9464 for HTTP: clusters of other tests (and `npm start`'s) run at the same time.
  const [natsPort, redisPort, httpPort, kafka] = await freePorts(4);
  const kafkaPort = opts.kafka ? kafka : undefined;
  await stopLocalCluster(name).catch(() => undefined);
  const state = await startLocalCluster({
    name,
    hosts: 2,
    subnetIndex,
    natsPort,
    redisPort,
    readyTimeoutMs: 90_000,
    kafkaPort,
    ...opts,
    coordinatorEnv: { FERRY_HTTP_PORT: String(httpPort), ...opts.coordinatorEnv },
  });
  const credentials = state.credentials ?? null;
  const httpTokens = { viewer: readDevHttpToken(state.http!.viewerTokenFile), operator: readDevHttpToken(state.http!.operatorTokenFile) };
  const nc = await connect({ servers: state.natsUrl, ...natsAuthOptionsFromFile(credentials?.admin) });
  return {
    name,
    natsUrl: state.natsUrl,
    nc,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    httpTokens,
    httpTokensFile: state.http!.tokensFile,
    kafkaBrokers: kafkaPort ? `127.0.0.1:${kafkaPort}` : null,
    kafka: state.kafka ?? null,
    credentials,
    async ferry(args, timeoutMs = 120_000) {
      try {
        const { stdout, stderr } = await exec(process.execPath, [FERRY_BIN, ...args], {
          env: { ...process.env, FERRY_NATS_URL: state.natsUrl, ...(credentials ? { FERRY_NATS_CREDENTIALS: credentials.cli } : {}) },
          timeout: timeoutMs,
          maxBuffer: 16 * 1024 * 1024,
        });
        return { code: 0, stdout, stderr, json: parseJson(stdout) };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '', json: parseJson(e.stdout ?? '') };
      }
    },
    async stop() {
      await nc.close().catch(() => undefined);
      await stopLocalCluster(name);
    },
  };
}

function parseJson(text: string): JsonDoc {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
