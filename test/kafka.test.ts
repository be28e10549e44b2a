/**
 * Kafka for real: a KRaft broker from Kafka's own jars, the coordinator producing lifecycle
 * events to `ferry.events` and consuming requests from `ferry.requests`.
 */
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import type { LifecycleEvent } from '@ferry/protocol';
import { startTestCluster, type TestCluster } from './helpers/cluster';
import { CounterWorkload, waitFor } from './helpers/workload';

jest.setTimeout(300_000);

let cluster: TestCluster;
let producer: Producer;
let consumer: Consumer;
const workloads: CounterWorkload[] = [];
const received: Array<{ key: string; doc: LifecycleEvent }> = [];

beforeAll(async () => {
  cluster = await startTestCluster('tkafka', 247, { kafka: true });
  const kafka = new Kafka({ clientId: 'ferry-test', brokers: [cluster.kafkaBrokers!], logLevel: logLevel.NOTHING });
  producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  consumer = kafka.consumer({ groupId: 'ferry-test-events' });
  await consumer.connect();
  await consumer.subscribe({ topic: 'ferry.events', fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      received.push({ key: message.key?.toString() ?? '', doc: JSON.parse(message.value!.toString()) });
    },
  });
});

afterAll(async () => {
  await consumer?.disconnect().catch(() => undefined);
  await producer?.disconnect().catch(() => undefined);
  await cluster?.stop();
  for (const w of workloads) await w.remove();
});

const request = (value: unknown) =>
  producer.send({ topic: 'ferry.requests', messages: [{ value: typeof value === 'string' ? value : JSON.stringify(value) }] });

test('a request on ferry.requests migrates a workload once; its events arrive on ferry.events in order; bad requests are rejected', async () => {
  const w = await CounterWorkload.create();
  workloads.push(w);
  const run = await cluster.ferry(['run', '--host', 'h1', '--name', 'kw', '--json', '--', ...w.argv(8)]);
  expect(run.code).toBe(0);
  await w.advancesPast(20, 30_000);
  const counterBefore = await w.counter();

  await request({ requestId: 'req-1', kind: 'migrate', workload: 'kw', to: 'h2' });
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
  const ps = await cluster.ferry(['ps', '--json']);
  const entry = (ps.json as Array<{ name: string; host: string; pid: number }>).find((x) => x.name === 'kw')!;
  expect(entry.host).toBe('h2');
  expect(await w.runningCopies()).toEqual([entry.pid]);
  expect(await w.verifyMemory(entry.pid)).toBe('OK');

  // The same request id again: no second migration. Then malformed requests and an unknown workload.
  await request({ requestId: 'req-1', kind: 'migrate', workload: 'kw', to: 'h1' });
  await request('{not json');
  await request({ requestId: 'req-2', kind: 'migrate' });
  await request({ requestId: 'req-3', kind: 'migrate', workload: 'ghost', to: 'h2' });
  const requestEvents = () => received.filter((r) => r.doc.type === 'request');
  await waitFor('request events', async () => requestEvents().length >= 4, 30_000);
  const [dup, notJson, missing, ghost] = requestEvents().map((r) => r.doc);
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

test('an old request (a replay, or a new consumer group reading from the beginning) is rejected as stale, and nothing happens', async () => {
  const before = received.filter((r) => r.doc.type === 'request').length;
  const anHourAgo = String(Date.now() - 60 * 60_000);
  await producer.send({ topic: 'ferry.requests', messages: [{ value: JSON.stringify({ requestId: 'req-old', kind: 'drain', host: 'h1' }), timestamp: anHourAgo }] });
  await waitFor('the stale request event', async () => received.filter((r) => r.doc.type === 'request').length > before, 30_000);
  const ev = received.filter((r) => r.doc.type === 'request')[before].doc;
  expect(ev).toMatchObject({ step: 'rejected', requestId: 'req-old', error: { code: 'FAILED_PRECONDITION', message: expect.stringContaining('not replayed') } });
  // h1 was not cordoned nor drained.
  const hosts = (await cluster.ferry(['hosts', '--json'])).json as Array<{ name: string; cordoned: boolean }>;
  expect(hosts.find((h) => h.name === 'h1')?.cordoned).toBe(false);
  expect(received.some((r) => r.doc.type === 'drain' || (r.doc.type === 'host' && r.doc.step === 'cordoned'))).toBe(false);
});
