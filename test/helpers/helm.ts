/**
 * The Helm chart under test (helm/ferry): `helm` itself (built by the set-up into .tools/bin/helm),
 * rendering with values, finding objects, and a real nats-server started from what the chart
 * renders (its nats.conf, passwords, TLS certificate and credentials files), so tests check the
 * permissions nats-server actually enforces, not only the text of the config.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as yaml from 'js-yaml';
import { connect, type ConnectionOptions, type NatsConnection, type TlsOptions } from 'nats';
import { natsAuthOptionsFromFile } from '@ferry/protocol';
import { REPO } from './cluster';
import type { JsonDoc } from './json-doc';

const exec = promisify(execFile);
/** The one place helm lives (scripts/install-helm.sh puts it there). */
export const HELM = join(REPO, '.tools', 'bin', 'helm');
export const CHART = join(REPO, 'helm', 'ferry');
const NATS_SERVER = '/usr/sbin/nats-server';

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: JsonDoc };

export async function helm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(HELM, args, { maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** `helm template rel` in namespace ferry-system with values files from the chart's ci/ dir and extra arguments. */
export async function render(valuesFiles: string[] = [], extra: string[] = []): Promise<K8sObject[]> {
  const args = ['template', 'rel', CHART, '--namespace', 'ferry-system', ...valuesFiles.flatMap((f) => ['-f', join(CHART, 'ci', f)]), ...extra];
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed: ${r.stderr}`);
  return (yaml.loadAll(r.stdout) as (K8sObject | null)[]).filter((o): o is K8sObject => o !== null);
}

export function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (o === undefined) throw new Error(`no ${kind} ${name} in: ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

export function envOf(container: JsonDoc): Record<string, JsonDoc> {
  return Object.fromEntries((container.env as JsonDoc[]).map((e) => [e.name, e.value ?? e.valueFrom]));
}

/** A nats-server run from a rendered release (release `rel`: the certificate names rel-ferry-nats). */
export interface RenderedNats {
  /** Connects as a principal, with its credentials file from the chart's Secret. */
  connectAs(principal: string): Promise<NatsConnection>;
  /** Connects with these options (TLS trusting the chart's CA unless `tls` says otherwise): 'connected' or the error's code. */
  tryConnect(opts: Partial<ConnectionOptions>): Promise<string>;
  /** The first permission error the server reports to `nc` after it publishes on `subject` (null: accepted). */
  publishError(nc: NatsConnection, subject: string): Promise<string | null>;
  /** Whether the server lets `nc` subscribe to `subject` (null: accepted, else the error). */
  subscribeError(nc: NatsConnection, subject: string): Promise<string | null>;
  caFile: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
}

/**
 * Starts nats-server with the rendered nats.conf, the passwords its Deployment takes from the
 * Secret, and the chart's generated TLS files (paths rewritten into a scratch dir).
 */
export async function startRenderedNats(objects: K8sObject[]): Promise<RenderedNats> {
  const secret = find(objects, 'Secret', 'rel-ferry-credentials').stringData as Record<string, string>;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-helm-nats-'));
  const tlsData = find(objects, 'Secret', 'rel-ferry-nats-tls').data as Record<string, string>;
  for (const k of ['ca.crt', 'tls.crt', 'tls.key']) writeFileSync(join(dir, k), Buffer.from(tlsData[k], 'base64'), { mode: 0o600 });
  const conf = (find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf'] as string)
    .replace(/^port: 4222$/m, `port: ${port}\nhost: 127.0.0.1`)
    .replace(/^http_port: .*$/m, '')
    .replaceAll('/etc/nats-tls/', `${dir}/`);
  writeFileSync(join(dir, 'nats.conf'), conf);
  // Exactly the environment the Deployment gives nats-server: each password from its Secret key.
  const natsEnv: Record<string, string> = {};
  for (const [name, from] of Object.entries(envOf(find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec.containers[0]))) {
    natsEnv[name] = secret[(from as JsonDoc).secretKeyRef.key as string];
  }
  const server = spawn(NATS_SERVER, ['-c', join(dir, 'nats.conf')], { env: { ...process.env, ...natsEnv }, stdio: ['ignore', 'ignore', 'pipe'] });
  // Its last words, for the error if it does not come up (a full run once saw it not start in 10 s).
  let stderrTail = '';
  server.stderr?.on('data', (chunk: Buffer) => (stderrTail = (stderrTail + chunk.toString()).slice(-2_000)));
  const connections: NatsConnection[] = [];
  // The certificate names the Service, not 127.0.0.1: dial the address, check the Service's name.
  // (nats.js passes `servername` through to tls.connect; its TlsOptions type does not list it.)
  const tlsFor = (tls: TlsOptions | undefined): TlsOptions => ({ caFile: join(dir, 'ca.crt'), ...tls, servername: 'rel-ferry-nats' }) as TlsOptions;
  const base = { servers: `127.0.0.1:${port}`, timeout: 3_000, reconnect: false };
  const stop = async () => {
    for (const nc of connections) await nc.close().catch(() => undefined);
    if (server.pid !== undefined && server.exitCode === null) {
      const exited = new Promise((r) => server.once('exit', r));
      process.kill(server.pid, 'SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const up = await new Promise<boolean>((resolve) => {
        const s = tcpConnect(port, '127.0.0.1').once('connect', () => (s.destroy(), resolve(true))).once('error', () => resolve(false));
      });
      if (up) break;
      if (Date.now() > deadline || server.exitCode !== null) {
        throw new Error(`nats-server did not start (${server.exitCode === null ? 'still running, not listening' : `exited ${server.exitCode}`}): ${stderrTail.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const statusError = async (nc: NatsConnection, act: () => void): Promise<string | null> => {
    const errors: string[] = [];
    const watching = (async () => {
      for await (const st of nc.status()) if (st.type === 'error') errors.push(String(st.data));
    })();
    act();
    await nc.flush().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 150));
    void watching;
    return errors[0] ?? null;
  };
  return {
    caFile: join(dir, 'ca.crt'),
    async connectAs(principal) {
      // The credentials reader insists on 0600, as the pods' 0400 Secret files are.
      const file = join(dir, `${principal}.json`);
      writeFileSync(file, secret[`nats-credentials-${principal}.json`].replace('/run/ferry-nats-tls/', `${dir}/`), { mode: 0o600 });
      const auth = natsAuthOptionsFromFile(file);
      const nc = await connect({ ...base, ...auth, tls: tlsFor(auth.tls ?? undefined) });
      connections.push(nc);
      return nc;
    },
    async tryConnect(opts) {
      return connect({ ...base, ...opts, ...('tls' in opts ? {} : { tls: tlsFor(undefined) }) }).then(
        (nc) => (connections.push(nc), 'connected'),
        (e: { code?: string; message?: string }) => e.code ?? e.message ?? 'error',
      );
    },
    publishError: (nc, subject) => statusError(nc, () => nc.publish(subject, new Uint8Array([0x80]))),
    subscribeError: (nc, subject) => statusError(nc, () => nc.subscribe(subject)),
    stop,
  };
}
