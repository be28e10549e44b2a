/**
 * NATS authentication, authorization and TLS for a dev cluster. `dev up` makes one principal per
 * role with a fresh random password and writes each one's credentials file (the format of
 * @ferry/protocol nats-credentials.ts) 0600 in a 0700 directory of the cluster's state dir:
 *
 *   coordinator  everything under ferry.v1.>, replies under _INBOX.>
 *   agent-<host> commands to itself only (ferry.v1.agent.<host>.>), its own registration and heartbeats,
 *                its progress events, transfer subjects; replies under _INBOX_<host>.>
 *   cli          requests to the coordinator (not heartbeat/register), events; replies under _INBOX_cli.>
 *   admin        everything (tests and debugging; give it to no process of the cluster)
 *
 * Transfer subjects (ferry.v1.xfer.>) are open to every agent: the coordinator picks the two
 * agents of a migration at run time, and NATS permissions are static. What keeps other agents
 * out of a transfer is the per-migration key (see @ferry/transfer chunk-cipher.ts): they see
 * ciphertext and cannot forge a frame the receiver accepts. See docs/security.md.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { subjects, type NatsCredentials } from '@ferry/protocol';
import { runCommand } from './run-command';

/** Random bytes of each generated password (base64url: 32 characters). */
const PASSWORD_BYTES = 24;
/** Lifetime of the dev CA and server certificate. Dev clusters live hours, not months. */
const DEV_CERT_DAYS = 30;
/**
 * How long an agent (or the coordinator) may take to answer a request it received. nats-server's
 * default for allow_responses is 2 minutes, shorter than a large checkpoint (the coordinator
 * allows 30 minutes), after which the reply would be a permission violation.
 */
const RESPONSE_PERMISSION_EXPIRY = '1h';

const ROOT = 'ferry.v1';

/** One NATS user: its credentials and what the server lets it publish and subscribe to. */
export interface DevNatsPrincipal {
  credentials: NatsCredentials;
  publish: { allow: string[]; deny?: string[] };
  subscribe: { allow: string[] };
  /** May answer requests it receives (publish once to their reply subject). */
  allowResponses: boolean;
}

/** Where each principal's credentials file is (what `dev up` records in cluster.json). */
export interface DevNatsCredentialFiles {
  coordinator: string;
  cli: string;
  admin: string;
  /** By host name. */
  agents: Record<string, string>;
}

/** The dev cluster's TLS material: the CA clients trust and the server's certificate. */
export interface DevTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** The directory holding credentials and certificates (0700). */
export function devNatsSecurityDir(stateDir: string): string {
  return path.join(stateDir, 'nats-auth');
}

/** The CLI credentials file of a dev cluster, whether or not it exists. */
export function devCliCredentialsFile(stateDir: string): string {
  return path.join(devNatsSecurityDir(stateDir), 'cli.json');
}

function newPassword(): string {
  return randomBytes(PASSWORD_BYTES).toString('base64url');
}

/** The principals of a cluster with `hosts` agent hosts (pure: passwords from `password()`). */
export function devNatsPrincipals(hosts: string[], tlsCaFile: string | null, password: () => string = newPassword): Record<string, DevNatsPrincipal> {
  const tls = tlsCaFile === null ? {} : { tls: { caFile: tlsCaFile } };
  const principals: Record<string, DevNatsPrincipal> = {
    coordinator: {
      credentials: { v: 1, user: 'coordinator', password: password(), ...tls },
      publish: { allow: [`${ROOT}.>`] },
      subscribe: { allow: [`${ROOT}.>`, '_INBOX.>'] },
      allowResponses: true,
    },
    cli: {
      credentials: { v: 1, user: 'cli', password: password(), inboxPrefix: '_INBOX_cli', ...tls },
      // Operators ask the coordinator; only agents register and beat.
      publish: { allow: [`${ROOT}.coord.>`], deny: [`${ROOT}.coord.heartbeat.>`, `${ROOT}.coord.register.>`] },
      subscribe: { allow: [`${ROOT}.events.>`, '_INBOX_cli.>'] },
      allowResponses: false,
    },
    admin: {
      credentials: { v: 1, user: 'admin', password: password(), ...tls },
      publish: { allow: ['>'] },
      subscribe: { allow: ['>'] },
      allowResponses: true,
    },
  };
  for (const host of hosts) {
    const inbox = `_INBOX_${host}`;
    principals[`agent-${host}`] = {
      credentials: { v: 1, user: `agent-${host}`, password: password(), inboxPrefix: inbox, ...tls },
      publish: {
        // Its own host's registration and heartbeat subjects only: it cannot speak for another host.
        allow: [subjects.register(host), subjects.heartbeat(host), subjects.progress(host), `${ROOT}.xfer.>`],
      },
      subscribe: { allow: [`${ROOT}.agent.${host}.>`, `${ROOT}.xfer.>`, `${inbox}.>`] },
      allowResponses: true,
    };
  }
  return principals;
}

function quoteList(values: string[]): string {
  return `[${values.map((v) => JSON.stringify(v)).join(', ')}]`;
}

/** The `authorization { users = [...] }` block of nats.conf for these principals. */
export function natsAuthorizationConfig(principals: Record<string, DevNatsPrincipal>): string {
  const users = Object.values(principals).map((p) => {
    const deny = p.publish.deny ? `, deny: ${quoteList(p.publish.deny)}` : '';
    const responses = p.allowResponses ? `, allow_responses: { max: 1, expires: "${RESPONSE_PERMISSION_EXPIRY}" }` : '';
    return (
      `    { user: ${JSON.stringify(p.credentials.user)}, password: ${JSON.stringify(p.credentials.password)}, ` +
      `permissions: { publish: { allow: ${quoteList(p.publish.allow)}${deny} }, subscribe: { allow: ${quoteList(p.subscribe.allow)} }${responses} } }`
    );
  });
  return ['authorization {', '  users = [', ...users, '  ]', '}', ''].join('\n');
}

/** The `tls {}` block of nats.conf: clients must speak TLS; no client certificates. */
export function natsTlsConfig(files: DevTlsFiles): string {
  return ['tls {', `  cert_file: ${JSON.stringify(files.certFile)}`, `  key_file: ${JSON.stringify(files.keyFile)}`, '  timeout: 2', '}', ''].join('\n');
}

/** Writes `text` to a new file only its owner can read (an existing one is replaced, not reused with its mode). */
export function writeSecretFile(file: string, text: string): void {
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
}

/** Creates the 0700 directory and writes every principal's credentials file; returns their paths. */
export function writeDevCredentials(stateDir: string, principals: Record<string, DevNatsPrincipal>): DevNatsCredentialFiles {
  const dir = devNatsSecurityDir(stateDir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const fileOf = (name: string) => {
    const file = path.join(dir, `${name}.json`);
    writeSecretFile(file, JSON.stringify(principals[name].credentials, null, 2) + '\n');
    return file;
  };
  const agents: Record<string, string> = {};
  for (const name of Object.keys(principals)) {
    if (name.startsWith('agent-')) agents[name.slice('agent-'.length)] = fileOf(name);
  }
  return { coordinator: fileOf('coordinator'), cli: fileOf('cli'), admin: fileOf('admin'), agents };
}

/**
 * Makes a throwaway CA and a server certificate for nats-server valid for `ipAddresses` (the
 * addresses clients dial: loopback and the bridge), with openssl. The CA key is deleted once the
 * server certificate is signed: nothing else is ever signed by it.
 */
export async function makeDevTls(stateDir: string, ipAddresses: string[]): Promise<DevTlsFiles> {
  const dir = devNatsSecurityDir(stateDir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await runCommand('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', String(DEV_CERT_DAYS), '-subj', '/CN=ferry dev CA']);
  await runCommand('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=nats-server']);
  // DNS:localhost too: nats.js dials IP URLs without a TLS server name, and Node then checks the
  // certificate against "localhost". The CA is this cluster's alone, so the name proves nothing
  // more than the IPs would.
  const names = ['DNS:localhost', ...ipAddresses.map((a) => `IP:${a}`)];
  fs.writeFileSync(f('server.ext'), `subjectAltName=${names.join(',')}\nextendedKeyUsage=serverAuth\n`);
  await runCommand('openssl', [
    'x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('server.pem'), '-days', String(DEV_CERT_DAYS), '-extfile', f('server.ext'),
  ]);
  for (const leftover of ['ca.key', 'ca.srl', 'server.csr', 'server.ext']) fs.rmSync(f(leftover), { force: true });
  fs.chmodSync(f('server.key'), 0o600);
  return { caFile: f('ca.pem'), certFile: f('server.pem'), keyFile: f('server.key') };
}
