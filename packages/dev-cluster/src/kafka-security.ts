/**
 * Authentication and authorisation for the dev Kafka broker: SASL/SCRAM-SHA-512 over TLS for
 * clients, and ACLs so each principal may do its part only:
 *
 * | principal | may |
 * | --- | --- |
 * | `coordinator` | read `ferry.requests` (group `ferry-coordinator`), write `ferry.events` |
 * | `autoscaler` | write `ferry.requests`, read `ferry.events` (groups named `autoscaler*`) |
 * | `admin` | everything (super user): the set-up here and the tests; no cluster process uses it |
 *
 * Nothing is allowed without an ACL (`allow.everyone.if.no.acl.found=false`). Passwords and the
 * autoscaler's request key are fresh random values per start, written 0600 into a 0700 directory;
 * the broker's certificate comes from a throwaway CA whose key is deleted once it is signed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AclOperationTypes, AclPermissionTypes, AclResourceTypes, Kafka, logLevel, ResourcePatternTypes, type AclEntry } from 'kafkajs';
import { ErrorCode, FerryError, type KafkaCredentials } from '@ferry/protocol';

const exec = promisify(execFile);
/** Days the dev broker's certificates are valid (a dev cluster lives hours). */
const DEV_CERT_DAYS = 30;
/** The group every coordinator of a cluster consumes requests in (the bridge's default). */
export const COORDINATOR_GROUP = 'ferry-coordinator';
/** Consumer groups the autoscaler principal may use start with this. */
export const AUTOSCALER_GROUP_PREFIX = 'autoscaler';

export const KAFKA_PRINCIPALS = ['admin', 'coordinator', 'autoscaler'] as const;
export type KafkaPrincipal = (typeof KAFKA_PRINCIPALS)[number];

/** What a secured dev broker hands its clients: every file is in `dir` (0700), secrets 0600. */
export interface KafkaDevSecurity {
  dir: string;
  /** The CA clients trust (not secret). */
  caFile: string;
  /** Each principal's SASL credentials file (@ferry/protocol kafka-credentials.ts). */
  credentials: Record<KafkaPrincipal, string>;
  /** The coordinator's request keys file (FERRY_KAFKA_REQUEST_KEYS). */
  requestKeys: string;
  /** The autoscaler's signing file (`{v, requester, key}`). */
  autoscalerRequestKey: string;
}

/** The broker side: its key store and the passwords it is formatted with. */
export interface KafkaBrokerSecrets {
  files: KafkaDevSecurity;
  /** server key + certificate, PEM (ssl.keystore.type=PEM). */
  keystoreFile: string;
  passwords: Record<KafkaPrincipal, string>;
  /** The broker's own user on its loopback controller listener (SASL/PLAIN). */
  controllerPassword: string;
}

function writeSecret(file: string, text: string): void {
  rmSync(file, { force: true });
  writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
}

/** Hex, so it needs no quoting in server.properties, JAAS or --add-scram. */
const newPassword = () => randomBytes(24).toString('hex');

/** Makes the CA, the broker's certificate (127.0.0.1, localhost), passwords and credentials files in `dir`. */
export async function makeKafkaBrokerSecrets(dir: string, openssl = 'openssl'): Promise<KafkaBrokerSecrets> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const f = (name: string) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const run = async (args: string[]) => {
    try {
      await exec(openssl, args, { timeout: 30_000 });
    } catch (err) {
      throw new FerryError(ErrorCode.INTERNAL, `openssl ${args[0]} failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`, { cause: err });
    }
  };
  await run(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', String(DEV_CERT_DAYS), '-subj', '/CN=ferry dev Kafka CA']);
  await run(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=kafka']);
  writeFileSync(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  await run(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.crt'), '-days', String(DEV_CERT_DAYS), '-extfile', f('server.ext')]);
  // Nothing else is ever signed by this CA.
  for (const leftover of ['ca.key', 'ca.srl', 'server.csr', 'server.ext']) rmSync(f(leftover), { force: true });
  // Kafka's PEM key store wants the key as PKCS#8, then the certificate, in one file.
  const { stdout: pkcs8 } = await exec(openssl, ['pkcs8', '-topk8', '-nocrypt', '-in', f('server.key')]);
  const { stdout: cert } = await exec(openssl, ['x509', '-in', f('server.crt')]);
  writeSecret(f('server.pem'), pkcs8 + cert);
  for (const leftover of ['server.key', 'server.crt']) rmSync(f(leftover), { force: true });

  const passwords = { admin: newPassword(), coordinator: newPassword(), autoscaler: newPassword() } as Record<KafkaPrincipal, string>;
  const credentials = {} as Record<KafkaPrincipal, string>;
  for (const p of KAFKA_PRINCIPALS) {
    const c: KafkaCredentials = { v: 1, mechanism: 'scram-sha-512', username: p, password: passwords[p] };
    credentials[p] = f(`${p}.json`);
    writeSecret(credentials[p], JSON.stringify(c, null, 2) + '\n');
  }
  const key = randomBytes(32).toString('base64');
  writeSecret(f('request-keys.json'), JSON.stringify({ v: 1, requesters: { autoscaler: [key] } }, null, 2) + '\n');
  writeSecret(f('request-key-autoscaler.json'), JSON.stringify({ v: 1, requester: 'autoscaler', key }, null, 2) + '\n');
  return {
    files: { dir, caFile: f('ca.pem'), credentials, requestKeys: f('request-keys.json'), autoscalerRequestKey: f('request-key-autoscaler.json') },
    keystoreFile: f('server.pem'),
    passwords,
    controllerPassword: newPassword(),
  };
}

/** server.properties lines for a SASL_SSL client listener on `port` and a SASL_PLAINTEXT controller listener, both on loopback. */
export function secureBrokerProperties(s: KafkaBrokerSecrets, port: number, controllerPort: number): string[] {
  const scram = (user: string, password: string) => `org.apache.kafka.common.security.scram.ScramLoginModule required username="${user}" password="${password}";`;
  const c = s.controllerPassword;
  return [
    `listeners=CLIENT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=CLIENT://127.0.0.1:${port}`,
    'listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT',
    'inter.broker.listener.name=CLIENT',
    'sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512',
    'listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512',
    `listener.name.client.scram-sha-512.sasl.jaas.config=${scram('admin', s.passwords.admin)}`,
    // SCRAM users live in the metadata log, which the controller serves: its own listener cannot
    // use them. PLAIN with one static user, the broker itself, on loopback.
    'sasl.mechanism.controller.protocol=PLAIN',
    'listener.name.controller.sasl.enabled.mechanisms=PLAIN',
    `listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${c}" user_controller="${c}";`,
    'ssl.keystore.type=PEM',
    `ssl.keystore.location=${s.keystoreFile}`,
    'ssl.truststore.type=PEM',
    `ssl.truststore.location=${s.files.caFile}`,
    'ssl.client.auth=none',
    'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer',
    'allow.everyone.if.no.acl.found=false',
    'super.users=User:admin;User:controller',
  ];
}

/** `kafka-storage format` arguments that create the SCRAM users with the log. */
export function scramFormatArgs(s: KafkaBrokerSecrets): string[] {
  return KAFKA_PRINCIPALS.flatMap((p) => ['--add-scram', `SCRAM-SHA-512=[name=${p},password=${s.passwords[p]}]`]);
}

/** The ACLs of the table above, for topics `events` and `requests`. */
export function devKafkaAcls(topics: { events: string; requests: string }): AclEntry[] {
  const allow = (principal: string, resourceType: AclResourceTypes, resourceName: string, operation: AclOperationTypes, prefixed = false): AclEntry => ({
    resourceType,
    resourceName,
    resourcePatternType: prefixed ? ResourcePatternTypes.PREFIXED : ResourcePatternTypes.LITERAL,
    principal: `User:${principal}`,
    host: '*',
    operation,
    permissionType: AclPermissionTypes.ALLOW,
  });
  const { TOPIC, GROUP } = AclResourceTypes;
  const { READ, WRITE, DESCRIBE } = AclOperationTypes;
  return [
    allow('coordinator', TOPIC, topics.requests, READ),
    allow('coordinator', TOPIC, topics.requests, DESCRIBE),
    allow('coordinator', TOPIC, topics.events, WRITE),
    allow('coordinator', TOPIC, topics.events, DESCRIBE),
    allow('coordinator', GROUP, COORDINATOR_GROUP, READ),
    allow('autoscaler', TOPIC, topics.requests, WRITE),
    allow('autoscaler', TOPIC, topics.requests, DESCRIBE),
    allow('autoscaler', TOPIC, topics.events, READ),
    allow('autoscaler', TOPIC, topics.events, DESCRIBE),
    allow('autoscaler', GROUP, AUTOSCALER_GROUP_PREFIX, READ, true),
  ];
}

/**
 * As the super user: creates the two topics (the coordinator may not create topics) and the ACLs.
 * Retries for `timeoutMs`: the port opens a moment before SCRAM logins work.
 */
export async function provisionDevKafka(brokers: string, s: KafkaBrokerSecrets, topics: { events: string; requests: string }, timeoutMs = 60_000): Promise<void> {
  const kafka = new Kafka({
    clientId: 'ferry-dev-setup',
    brokers: [brokers],
    ssl: { ca: [readFileSync(s.files.caFile)] },
    sasl: { mechanism: 'scram-sha-512', username: 'admin', password: s.passwords.admin },
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 },
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const have = new Set(await admin.listTopics());
      const missing = [topics.events, topics.requests].filter((t) => !have.has(t)).map((topic) => ({ topic, numPartitions: 1 }));
      if (missing.length > 0) await admin.createTopics({ topics: missing, waitForLeaders: true });
      await admin.createAcls({ acl: devKafkaAcls(topics) });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new FerryError(ErrorCode.UNAVAILABLE, `could not set up the dev Kafka broker's topics and ACLs: ${(err as Error).message}`, { cause: err });
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
}

/** What cluster.json records of a cluster's Kafka broker: where it is and its clients' files. */
export interface DevKafkaRecord {
  brokers: string;
  /** null: an anonymous plaintext broker. */
  security: KafkaDevSecurity | null;
}

/** The coordinator's environment for a dev broker (its main.ts reads these). */
export function devKafkaCoordinatorEnv(rec: DevKafkaRecord): Record<string, string> {
  const env: Record<string, string> = { FERRY_KAFKA_BROKERS: rec.brokers };
  if (rec.security) {
    env.FERRY_KAFKA_TLS_CA_FILE = rec.security.caFile;
    env.FERRY_KAFKA_CREDENTIALS = rec.security.credentials.coordinator;
    env.FERRY_KAFKA_REQUEST_KEYS = rec.security.requestKeys;
  }
  return env;
}
