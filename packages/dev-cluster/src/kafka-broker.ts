/**
 * A single-node Kafka broker in KRaft mode (broker and controller in one JVM), run from the jars
 * scripts/install-kafka.sh put in .tools/kafka/libs, the way Kafka's own scripts do it:
 * `kafka-storage.sh format` is `kafka.tools.StorageTool format`, `kafka-server-start.sh` is
 * `kafka.Kafka server.properties`. For `ferry dev up --kafka` and the tests; not a production setup.
 * By default clients must use SASL/SCRAM-SHA-512 over TLS and ACLs limit each principal to its
 * part (./kafka-security.ts); `secure: false` gives the old anonymous plaintext broker.
 */
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { connect as tcpConnect, createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError } from '@ferry/protocol';
import { makeKafkaBrokerSecrets, provisionDevKafka, scramFormatArgs, secureBrokerProperties, type KafkaDevSecurity } from './kafka-security';

const exec = promisify(execFile);
/** Where install-kafka.sh puts the jars (repo/.tools/kafka/libs; this file is in packages/dev-cluster/{src,dist}). */
export const DEFAULT_KAFKA_LIBS_DIR = join(__dirname, '..', '..', '..', '.tools', 'kafka', 'libs');
/** The class `kafka-server-start.sh` runs; also how a broker's pid is recognised before it is killed. */
const BROKER_MAIN_CLASS = 'kafka.Kafka';

export interface KafkaBrokerOptions {
  /** Client listener on 127.0.0.1; 0 picks a free port. */
  port: number;
  /** KRaft controller listener on 127.0.0.1; 0 picks a free port. */
  controllerPort: number;
  /** Log dirs, config and broker.pid; made fresh (emptied) on start. */
  dataDir: string;
  libsDir: string;
  /** JVM heap; a single-node broker for a few topics is happy with 256 MiB. */
  heapMb: number;
  /** How long the client port may take to open (measured ~18 s on a busy 2-core VM). */
  readyTimeoutMs: number;
  java: string;
  /** SASL/SCRAM over TLS with ACLs (default); false: anonymous plaintext, everyone may do anything. */
  secure: boolean;
  /** Topics created and given ACLs when secure (the coordinator may not create them). */
  topics: { events: string; requests: string };
}

export function defaultKafkaBrokerOptions(): KafkaBrokerOptions {
  return {
    port: 9092,
    controllerPort: 0, dataDir: '/run/ferry/kafka/ferry', libsDir: DEFAULT_KAFKA_LIBS_DIR, heapMb: 256, readyTimeoutMs: 90_000,
    java: 'java',
    secure: true,
    topics: { events: 'ferry.events', requests: 'ferry.requests' },
  };
}

export interface RunningKafkaBroker {
  pid: number;
  /** bootstrap address, host:port */
  brokers: string;
  dataDir: string;
  /** CA, credentials and request-key files when secure; null for a plaintext broker. */
  security: KafkaDevSecurity | null;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Formats a fresh KRaft log dir and starts the broker detached; resolves when its port accepts connections. */
export async function startKafkaBroker(partial: Partial<KafkaBrokerOptions> = {}): Promise<RunningKafkaBroker> {
  const o = { ...defaultKafkaBrokerOptions(), ...partial };
  if (!existsSync(o.libsDir) || !readdirSync(o.libsDir).some((f) => f.startsWith('kafka_2.13-'))) {
    throw new FerryError(ErrorCode.FAILED_PRECONDITION, `no Kafka jars in ${o.libsDir}: run scripts/install-kafka.sh (or scripts/setup.sh) first`);
  }
  const port = o.port || (await freePort());
  const controllerPort = o.controllerPort || (await freePort());
  if (await canConnect(port)) throw new FerryError(ErrorCode.CONFLICT, `port ${port} is already taken (another Kafka broker?)`);
  await stopKafkaBroker(o.dataDir);
  await rm(o.dataDir, { recursive: true, force: true });
  const logDir = join(o.dataDir, 'log');
  await mkdir(logDir, { recursive: true });
  const secrets = o.secure ? await makeKafkaBrokerSecrets(join(o.dataDir, 'auth')) : null;
  const listeners = secrets
    ? secureBrokerProperties(secrets, port, controllerPort)
    : [
        `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
        'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      ];
  const config = join(o.dataDir, 'server.properties');
  await writeFile(
    config,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      'controller.listener.names=CONTROLLER',
      ...listeners,
      `log.dirs=${logDir}`,
      // One node: internal topics cannot have more replicas than that.
      'offsets.topic.replication.factor=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      // A consumer group of one need not wait 3 s for others to join.
      'group.initial.rebalance.delay.ms=0',
      'num.partitions=1',
      '',
    ].join('\n'),
    // It holds the passwords when secure.
    { mode: 0o600 },
  );
  const log4j = join(o.dataDir, 'log4j.properties');
  await writeFile(
    log4j,
    ['log4j.rootLogger=WARN, stdout', 'log4j.appender.stdout=org.apache.log4j.ConsoleAppender', 'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout', 'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n', ''].join('\n'),
  );
  const jvm = [`-Xms${Math.min(128, o.heapMb)}m`, `-Xmx${o.heapMb}m`, '-XX:+UseSerialGC', '-Djava.awt.headless=true', `-Dlog4j.configuration=file:${log4j}`, '-cp', join(o.libsDir, '*')];
  // A KRaft cluster id is 16 random bytes, base64url without padding (what `kafka-storage.sh random-uuid` prints).
  const clusterId = randomBytes(16).toString('base64url');
  try {
    // `--cluster-id=ID`, not `-t ID`: a base64url id starting with '-' (1 in 64) reads as an option otherwise.
    await exec(o.java, [...jvm, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', config, ...(secrets ? scramFormatArgs(secrets) : [])], { timeout: 60_000 });
  } catch (err) {
    throw new FerryError(ErrorCode.INTERNAL, `kafka-storage format failed: ${(err as { stderr?: string }).stderr || `exit code ${(err as { code?: unknown }).code}`}`, { cause: err });
  }
  const logPath = join(o.dataDir, 'broker.log');
  const fd = openSync(logPath, 'a');
  const child = spawn(o.java, [...jvm, BROKER_MAIN_CLASS, config], { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new FerryError(ErrorCode.INTERNAL, 'java did not start');
  await writeFile(join(o.dataDir, 'broker.pid'), `${pid}\n`);
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? -1));
  const running: RunningKafkaBroker = { pid, brokers: `127.0.0.1:${port}`, dataDir: o.dataDir, security: secrets?.files ?? null, stop: () => stopKafkaBroker(o.dataDir) };
  const deadline = Date.now() + o.readyTimeoutMs;
  while (!(await canConnect(port))) {
    if (exited !== null || Date.now() > deadline) {
      await running.stop();
      const tail = existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new FerryError(exited !== null ? ErrorCode.INTERNAL : ErrorCode.DEADLINE_EXCEEDED, `Kafka broker did not come up on port ${port}:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  if (secrets) {
    try {
      await provisionDevKafka(running.brokers, secrets, o.topics, Math.max(10_000, deadline - Date.now()));
    } catch (err) {
      await running.stop();
      throw err;
    }
  }
  return running;
}

function isBroker(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(BROKER_MAIN_CLASS);
  } catch {
    return false;
  }
}

/** Stops the broker whose pid `dataDir/broker.pid` records (SIGTERM, then SIGKILL); no broker is not an error. */
export async function stopKafkaBroker(dataDir: string, graceMs = 10_000): Promise<void> {
  const pidFile = join(dataDir, 'broker.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  // The pid may have been reused since: only a process running kafka.Kafka is ours to kill.
  if (Number.isInteger(pid) && pid > 0 && isBroker(pid)) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (isBroker(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (isBroker(pid)) process.kill(pid, 'SIGKILL');
    while (isBroker(pid)) await new Promise((r) => setTimeout(r, 50));
  }
  await rm(pidFile, { force: true });
}
