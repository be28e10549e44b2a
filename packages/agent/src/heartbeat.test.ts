import type { Msg, NatsConnection } from 'nats';
import { decode, encode, subjects, type CriuInfo, type Heartbeat } from '@ferry/protocol';
import { HeartbeatLoop, MAX_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_INTERVAL_MS } from './heartbeat';

const criu: CriuInfo = { version: '4.2.1', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true, lazyPages: true, pageServerTls: true, lazyDump: true, pageTunnel: true, pipeData: true, stream: true, memoryPrecopy: true, unprivilegedUserfaultfd: false };

/** The two calls the loop makes on a connection: register (request) and beat (publish). */
function fakeNats(reply: () => Promise<Record<string, unknown>>) {
  const published: { subject: string; body: Heartbeat }[] = [];
  const requests: string[] = [];
  const nc = {
    request: async (subject: string): Promise<Msg> => {
      requests.push(subject);
      return { data: encode({ ok: true, ...(await reply()) }) } as unknown as Msg;
    },
    publish: (subject: string, data: Uint8Array) => published.push({ subject, body: decode(data) as Heartbeat }),
  } as unknown as NatsConnection;
  return { nc, published, requests };
}

test('registers first, then beats on its own subject with the workload list', async () => {
  const { nc, published, requests } = fakeNats(async () => ({ heartbeatIntervalMs: 1000 }));
  const loop = new HeartbeatLoop(nc, { host: 'h1', address: '198.18.0.1', intervalMs: 1000, sealKey: Buffer.alloc(32) }, criu, async () => []);
  await loop.start();
  loop.stop();
  expect(requests).toEqual([subjects.register('h1')]);
  expect(published).toHaveLength(1);
  expect(published[0]).toEqual({ subject: subjects.heartbeat('h1'), body: expect.objectContaining({ host: 'h1', bootId: loop.bootId, seq: 0, workloads: [] }) });
});

test('follows the interval the coordinator asks for, within bounds', async () => {
  for (const [asked, expected] of [
    [250, 250],
    [1, MIN_HEARTBEAT_INTERVAL_MS],
    [10 * MAX_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS],
  ]) {
    const { nc } = fakeNats(async () => ({ heartbeatIntervalMs: asked }));
    const loop = new HeartbeatLoop(nc, { host: 'h1', address: '', intervalMs: 1000, sealKey: Buffer.alloc(32) }, criu, async () => []);
    await loop.start();
    loop.stop();
    expect(loop.currentIntervalMs).toBe(expected);
  }
});

test('a coordinator that is not there: no beat, registration retried on the next one', async () => {
  let up = false;
  const { nc, published, requests } = fakeNats(async () => {
    if (!up) throw Object.assign(new Error('no responders'), { code: '503' });
    return { heartbeatIntervalMs: 1000 };
  });
  const loop = new HeartbeatLoop(nc, { host: 'h1', address: '', intervalMs: 60_000, sealKey: Buffer.alloc(32) }, criu, async () => []);
  await loop.start();
  expect(published).toHaveLength(0);
  up = true;
  await (loop as unknown as { beat(): Promise<void> }).beat();
  loop.stop();
  expect(requests).toHaveLength(2);
  expect(published).toHaveLength(1);
});

test('a malformed registration reply is not taken as registered', async () => {
  const { nc, published } = fakeNats(async () => ({ heartbeatIntervalMs: 'soon' }));
  const loop = new HeartbeatLoop(nc, { host: 'h1', address: '', intervalMs: 1000, sealKey: Buffer.alloc(32) }, criu, async () => []);
  await loop.start();
  loop.stop();
  expect(published).toHaveLength(0);
  expect(loop.currentIntervalMs).toBe(1000);
});
