/**
 * Kafka for real: a KRaft broker from Kafka's own jars with SASL/SCRAM-SHA-512 over TLS and ACLs,
 * the coordinator producing lifecycle events to `ferry.events` and consuming signed requests from
 * `ferry.requests`. Each attack is carried out against the running cluster and must be refused
 * with a clear error while the workload keeps running, once, where it was.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Kafka, logLevel, type Consumer, type KafkaConfig, type Producer, type SASLOptions } from 'kafkajs';
import { loadKafkaCredentials, loadKafkaRequestSigner, signKafkaRequest, type KafkaRequestSigner, type LifecycleEvent, type SignableKafkaRequest } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(300_000);

let cluster: TestCluster;
let producer: Producer;
let consumer: Consumer;
let signer: KafkaRequestSigner;
const workloads: CounterWorkload[] = [];
const received: Array<{ key: string; doc: LifecycleEvent }> = [];
const others: Array<{ disconnect(): Promise<void> }> = [];

/** A client as `principal` (its credentials file from cluster.json), or with the config given. */
function client(principal: 'admin' | 'coordinator' | 'autoscaler' | null, extra: Partial<KafkaConfig> = {}): Kafka {
  const sec = cluster.kafka!.security!;
  const sasl = (p: 'admin' | 'coordinator' | 'autoscaler'): SASLOptions => {
    const { mechanism, username, password } = loadKafkaCredentials(sec.credentials[p]);
    return { mechanism, username, password } as SASLOptions;
  };
  return new Kafka({
    clientId: `ferry-test-${principal ?? 'anonymous'}`,
    brokers: [cluster.kafkaBrokers!],
    ssl: { ca: [readFileSync(sec.caFile)] },
    ...(principal ? { sasl: sasl(principal) } : {}),
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 5_000,
    ...extra,
  });
}

beforeAll(async () => {
  cluster = await startTestCluster('tkafka', 247, { kafka: true });
  signer = loadKafkaRequestSigner(cluster.kafka!.security!.autoscalerRequestKey);
  const kafka = client('autoscaler', { retry: { retries: 5 } });
  producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  // The autoscaler principal may use consumer groups named autoscaler*.
  consumer = kafka.consumer({ groupId: 'autoscaler-test-events' });
  await consumer.connect();
  await consumer.subscribe({ topic: 'ferry.events', fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      received.push({ key: message.key?.toString() ?? '', doc: JSON.parse(message.value!.toString()) });
    },
  });
});

afterAll(async () => {
  for (const o of others) await o.disconnect().catch(() => undefined);
  await consumer?.disconnect().catch(() => undefined);
  await producer?.disconnect().catch(() => undefined);
  await cluster?.stop();
  for (const w of workloads) await w.remove();
});

const produce = (value: unknown, timestamp?: string) =>
  producer.send({ topic: 'ferry.requests', messages: [{ value: typeof value === 'string' ? value : JSON.stringify(value), ...(timestamp ? { timestamp } : {}) }] });
const signed = (req: SignableKafkaRequest, nowMs?: number) => signKafkaRequest(req, signer, nowMs);
const requestEvents = () => received.filter((r) => r.doc.type === 'request').map((r) => r.doc);

/** The next `n` request events after the first `before`. */
async function nextRequestEvents(before: number, n: number): Promise<LifecycleEvent[]> {
  await waitFor(`${n} request events`, async () => requestEvents().length >= before + n, 30_000);
  return requestEvents().slice(before, before + n);
}

/** Connects and sends one message to `topic` as that client's producer. */
async function sendAs(kafka: Kafka, topic: string): Promise<void> {
  const p = kafka.producer({ allowAutoTopicCreation: false });
  others.push(p);
  await p.connect();
  await p.send({ topic, messages: [{ value: '{}' }] });
}

/**
 * Consumes `topic` in `groupId` as that client: the error the consumer crashed with, or null once
 * it joined its group and fetched (a consumer's join and fetches run in the background, so a
 * refusal arrives as its crash event).
 */
async function consumeError(kafka: Kafka, groupId: string, topic: string): Promise<Error | null> {
  const c = kafka.consumer({ groupId });
  let timer: NodeJS.Timeout | undefined;
  const outcome = new Promise<Error | null>((resolve) => {
    c.on(c.events.CRASH, (e) => resolve(e.payload.error));
    c.on(c.events.FETCH, () => resolve(null));
    timer = setTimeout(() => resolve(new Error('neither fetched nor crashed in 20 s')), 20_000);
  });
  try {
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({ eachMessage: async () => undefined });
    return await outcome;
  } catch (err) {
    return err as Error;
  } finally {
    clearTimeout(timer);
    await c.disconnect().catch(() => undefined);
  }
}

test('no credentials, a wrong password, an unknown user or no TLS: nothing reaches the topics', async () => {
  // TLS but no SASL: the broker closes the connection at the first request that is not a handshake.
  await expect(sendAs(client(null), 'ferry.requests')).rejects.toThrow(/Closed connection/);
  await expect(sendAs(client(null, { sasl: { mechanism: 'scram-sha-512', username: 'autoscaler', password: 'not-the-password-at-all' } }), 'ferry.requests')).rejects.toThrow(
    /SASL SCRAM SHA512 authentication failed.*invalid credentials/,
  );
  await expect(sendAs(client(null, { sasl: { mechanism: 'scram-sha-512', username: 'mallory', password: 'a-password-long-enough' } }), 'ferry.requests')).rejects.toThrow(
    /authentication failed/i,
  );
  // The right password, in clear: the listener speaks TLS only.
  await expect(sendAs(client('autoscaler', { ssl: false }), 'ferry.requests')).rejects.toThrow(/Closed connection/);
});

test('ACLs: the autoscaler may not read requests, write events or use the coordinators\' group; the coordinator may not write requests', async () => {
  await expect(sendAs(client('autoscaler'), 'ferry.events')).rejects.toThrow(/Not authorized to access topics/);
  await expect(sendAs(client('coordinator'), 'ferry.requests')).rejects.toThrow(/Not authorized to access topics/);
  expect((await consumeError(client('autoscaler'), 'autoscaler-snoop', 'ferry.requests'))?.message).toMatch(/Not authorized to access topics/);
  // Joining the coordinators' group would take requests away from them. The broker answers
  // GROUP_AUTHORIZATION_FAILED; kafkajs reports any failed coordinator lookup this way.
  expect((await consumeError(client('autoscaler'), 'ferry-coordinator', 'ferry.events'))?.message).toMatch(/Failed to find group coordinator/);
  // The same read in a group of its own prefix works: the group ACL made the difference.
  expect(await consumeError(client('autoscaler'), 'autoscaler-probe', 'ferry.events')).toBeNull();
});

test('unsigned, forged, tampered, old-signed and replayed requests are rejected and the workload stays put, once; a signed request migrates it', async () => {
  const w = await CounterWorkload.create();
  workloads.push(w);

  // Signed before the workload exists: rejected (NOT_FOUND). Its exact bytes are replayed below.
  let before = requestEvents().length;
  const early = JSON.stringify(signed({ requestId: 'req-early', kind: 'migrate', workload: 'kw', to: 'h2' }));
  await produce(early);
  expect((await nextRequestEvents(before, 1))[0]).toMatchObject({ step: 'rejected', requestId: 'req-early', error: { code: 'NOT_FOUND' } });

  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'kw', '--json', '--', ...w.argv(8)]);
  expect(run.code).toBe(0);
  await w.advancesPast(20, 30_000);
  const pidBefore = ((await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; pid: number }>).find((x) => x.name === 'kw')!.pid;

  before = requestEvents().length;
  const mallory: KafkaRequestSigner = { requester: 'autoscaler', key: randomBytes(32) };
  const intruder: KafkaRequestSigner = { requester: 'intruder', key: randomBytes(32) };
  const tampered = { ...signed({ requestId: 'req-tampered', kind: 'migrate', workload: 'kw', to: 'h1' }), to: 'h2' };
  const anHourAgo = Date.now() - 60 * 60_000;
  await produce({ requestId: 'req-unsigned', kind: 'migrate', workload: 'kw', to: 'h2' });
  await produce(signKafkaRequest({ requestId: 'req-forged', kind: 'migrate', workload: 'kw', to: 'h2' }, mallory));
  await produce(signKafkaRequest({ requestId: 'req-intruder', kind: 'drain', host: 'h1' }, intruder));
  await produce(tampered);
  // Signed an hour ago, produced now (Kafka's own timestamp is fresh): the signed time counts.
  await produce(signed({ requestId: 'req-old-signed', kind: 'migrate', workload: 'kw', to: 'h2' }, anHourAgo));
  // The early request again, byte for byte, now that its workload exists.
  await produce(early);
  const [unsigned, forged, unknown, tamper, oldSigned, replay] = await nextRequestEvents(before, 6);
  const refused = (requestId: string, message: RegExp) => ({ step: 'rejected', requestId, error: { code: 'UNAUTHENTICATED', message: expect.stringMatching(message) } });
  expect(unsigned).toMatchObject(refused('req-unsigned', /not signed/));
  expect(forged).toMatchObject(refused('req-forged', /bad signature/));
  expect(unknown).toMatchObject(refused('req-intruder', /unknown requester "intruder"/));
  expect(tamper).toMatchObject(refused('req-tampered', /bad signature/));
  expect(oldSigned).toMatchObject(refused('req-old-signed', /signed \d+ s ago.*not replayed/));
  expect(replay).toMatchObject(refused('req-early', /replay/));

  // Nothing started: kw runs once, on h1, as the same process; h1 is not cordoned.
  expect(received.some((r) => r.doc.type === 'migration')).toBe(false);
  const ps = (await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>;
  expect(ps.filter((x) => x.name === 'kw')).toEqual([expect.objectContaining({ host: 'h1', pid: pidBefore })]);
  expect(await w.runningCopies()).toEqual([pidBefore]);
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; cordoned: boolean }>;
  expect(hosts.find((h) => h.name === 'h1')?.cordoned).toBe(false);
  expect(((await cluster.ferry(['status', '--json'])).json as unknown[]).length).toBe(0);

  // Now the real autoscaler's signed request.
  const counterBefore = await w.counter();
  await produce(signed({ requestId: 'req-1', kind: 'migrate', workload: 'kw', to: 'h2' }));
  const migration = () => received.filter((r) => r.doc.type === 'migration' && r.doc.requestId === 'req-1');
  await waitFor('the migration to succeed', async () => migration().some((r) => r.doc.step === 'succeeded'), 120_000);
  const events = migration();
  expect(events.map((r) => r.doc.step)).toEqual(['requested', 'preflight-passed', 'frozen', 'transferred', 'restored', 'succeeded']);
  for (const r of events) {
    expect(r.key).toBe('kw');
    expect(r.doc).toMatchObject({ workload: 'kw', from: 'h1', to: 'h2', migrationId: events[0].doc.migrationId });
  }
  expect(events[5].doc.figures.downtimeMs).toBeGreaterThan(0);
  expect(events[3].doc.figures.bytesTransferred).toBeGreaterThan(8 * 1024 * 1024);

  // The workload really moved, once, with its memory.
  expect(await w.advancesPast(counterBefore)).toBeGreaterThan(counterBefore);
  const after = ((await cluster.ferry(['ps', '--json'])).json as Array<{ name: string; host: string; pid: number }>).find((x) => x.name === 'kw')!;
  expect(after.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([after.pid]);
  expect(await w.verifyMemory(after.pid)).toBe('OK');

  // The same request id signed again: no second migration. Then malformed requests and an unknown workload.
  before = requestEvents().length;
  await produce(signed({ requestId: 'req-1', kind: 'migrate', workload: 'kw', to: 'h1' }));
  await produce('{not json');
  await produce({ requestId: 'req-2', kind: 'migrate' });
  await produce(signed({ requestId: 'req-3', kind: 'migrate', workload: 'ghost', to: 'h2' }));
  const [dup, notJson, missing, ghost] = await nextRequestEvents(before, 4);
  expect(dup).toMatchObject({ step: 'duplicate', requestId: 'req-1', migrationId: events[0].doc.migrationId, key: 'kw' });
  expect(notJson).toMatchObject({ step: 'rejected', requestId: null, error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('not JSON') } });
  expect(missing).toMatchObject({ step: 'rejected', requestId: 'req-2', error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('workload') } });
  expect(ghost).toMatchObject({ step: 'rejected', requestId: 'req-3', key: 'ghost', error: { code: 'NOT_FOUND' } });

  const status = await cluster.ferry(['status', '--json']);
  expect((status.json as Array<{ workload: string }>).filter((m) => m.workload === 'kw')).toHaveLength(1);
  expect(received.filter((r) => r.doc.type === 'migration' && r.doc.step === 'requested')).toHaveLength(1);
  // Still answering after all that: the coordinator did not crash.
  expect((await cluster.ferry(['hosts', '--json'])).code).toBe(0);
  expect((await cluster.ferry(['stop', 'kw'])).code).toBe(0);
});

test('an old message (a replay, or a new consumer group reading from the beginning) is rejected as stale, and nothing happens', async () => {
  const before = requestEvents().length;
  const anHourAgo = String(Date.now() - 60 * 60_000);
  await produce(signed({ requestId: 'req-old', kind: 'drain', host: 'h1' }), anHourAgo);
  const [ev] = await nextRequestEvents(before, 1);
  expect(ev).toMatchObject({ step: 'rejected', requestId: 'req-old', error: { code: 'FAILED_PRECONDITION', message: expect.stringContaining('not replayed') } });
  // h1 was not cordoned nor drained.
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; cordoned: boolean }>;
  expect(hosts.find((h) => h.name === 'h1')?.cordoned).toBe(false);
  expect(received.some((r) => r.doc.type === 'drain' || (r.doc.type === 'host' && r.doc.step === 'cordoned'))).toBe(false);
});
