import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { signKafkaRequest, type LifecycleEvent } from '@ferry/protocol';
import { DEFAULT_MAX_REQUEST_AGE_MS, KafkaBridge, KafkaRequest, defaultKafkaBridgeOptions, kafkaClientSecurity, requestAuthProblem, staleRequestProblem } from './kafka-bridge';
import type { EventJournal } from './lifecycle-events';
import type { MigrationStore } from './migration-store';

test('a request older than the freshness window, or without a timestamp, is not acted on', () => {
  const now = 1_800_000_000_000;
  expect(staleRequestProblem(now - 5_000, now, DEFAULT_MAX_REQUEST_AGE_MS)).toBeNull();
  expect(staleRequestProblem(now - DEFAULT_MAX_REQUEST_AGE_MS - 1, now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/not replayed/);
  expect(staleRequestProblem(Number.NaN, now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/no timestamp/);
});

test('only a request signed by a configured requester is acted on; with no keys, none is', () => {
  const now = Date.now();
  const key = randomBytes(32);
  const raw = signKafkaRequest({ requestId: 'r1', kind: 'drain', host: 'h1' }, { requester: 'autoscaler', key }, now) as unknown as Record<string, unknown>;
  const req = KafkaRequest.parse(raw);
  expect(requestAuthProblem(raw, req, new Map([['autoscaler', [key]]]), now, DEFAULT_MAX_REQUEST_AGE_MS)).toBeNull();
  expect(requestAuthProblem(raw, req, new Map(), now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/knows no request keys.*no request is accepted/);
  expect(requestAuthProblem({ ...raw, auth: undefined }, req, new Map([['autoscaler', [key]]]), now, DEFAULT_MAX_REQUEST_AGE_MS)).toMatch(/not signed/);
  // The schema keeps the fields the tag covers; `auth` is read from the raw document.
  expect(req).toEqual({ requestId: 'r1', kind: 'drain', host: 'h1' });
});

test("kafkajs's ssl and sasl options: none, system CAs, a CA file, SCRAM credentials", () => {
  expect(kafkaClientSecurity(null, null)).toEqual({});
  expect(kafkaClientSecurity({ caFile: null }, null)).toEqual({ ssl: true });
  const ca = join(mkdtempSync(join(tmpdir(), 'ferry-kafka-')), 'ca.pem');
  writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');
  const creds = { v: 1 as const, mechanism: 'scram-sha-512' as const, username: 'coordinator', password: 'p'.repeat(32) };
  expect(kafkaClientSecurity({ caFile: ca }, creds)).toEqual({
    ssl: { ca: [Buffer.from('-----BEGIN CERTIFICATE-----\n')] },
    sasl: { mechanism: 'scram-sha-512', username: 'coordinator', password: 'p'.repeat(32) },
  });
});

describe('a request as the consumer hands it over', () => {
  const key = randomBytes(32);
  const signer = { requester: 'autoscaler', key };

  /** A bridge with an in-memory request store, a journal that keeps events, and a NATS that never answers. */
  function bridge() {
    const claims = new Map<string, string>();
    const events: LifecycleEvent[] = [];
    const asked: string[] = [];
    const store = {
      requestHolder: async (id: string) => claims.get(id) ?? null,
      claimRequest: async (id: string, holder: string) => {
        if (claims.has(id)) return claims.get(id)!;
        claims.set(id, holder);
        return null;
      },
      releaseRequest: async (id: string, holder: string) => {
        if (claims.get(id) === holder) claims.delete(id);
      },
    };
    const nc = {
      request: async (subject: string) => {
        asked.push(subject);
        throw Object.assign(new Error('no responders'), { code: '503' });
      },
    };
    const b = new KafkaBridge(
      { ...defaultKafkaBridgeOptions(), requestKeys: new Map([['autoscaler', [key]]]) },
      { nc: nc as unknown as NatsConnection, journal: { record: async (ev: LifecycleEvent) => void events.push(ev) } as unknown as EventJournal, store: store as unknown as MigrationStore },
    );
    return { b, events, asked, claims };
  }

  test('unsigned or forged: rejected UNAUTHENTICATED, nothing asked of the coordinator, nothing claimed', async () => {
    const { b, events, asked, claims } = bridge();
    await b.handleRequest(JSON.stringify({ requestId: 'r1', kind: 'drain', host: 'h1' }), Date.now());
    await b.handleRequest(JSON.stringify(signKafkaRequest({ requestId: 'r2', kind: 'drain', host: 'h1' }, { requester: 'autoscaler', key: randomBytes(32) })), Date.now());
    expect(events.map((e) => [e.step, e.requestId, e.error?.code])).toEqual([
      ['rejected', 'r1', 'UNAUTHENTICATED'],
      ['rejected', 'r2', 'UNAUTHENTICATED'],
    ]);
    expect(events[0].error?.message).toMatch(/not signed/);
    expect(events[1].error?.message).toMatch(/bad signature/);
    expect(asked).toEqual([]);
    expect(claims.size).toBe(0);
  });

  test('a signed message is acted on once: the same bytes again are a replay, a fresh signature is a new attempt', async () => {
    const { b, events, asked } = bridge();
    const message = JSON.stringify(signKafkaRequest({ requestId: 'd1', kind: 'drain', host: 'h1' }, signer));
    await b.handleRequest(message, Date.now());
    // The coordinator did not answer, so the drain's id was released; its signature stays spent.
    expect(events.map((e) => [e.step, e.error?.code])).toEqual([['rejected', 'UNAVAILABLE']]);
    await b.handleRequest(message, Date.now());
    expect(events[1]).toMatchObject({ step: 'rejected', requestId: 'd1', error: { code: 'UNAUTHENTICATED', message: expect.stringContaining('replay') } });
    await b.handleRequest(JSON.stringify(signKafkaRequest({ requestId: 'd1', kind: 'drain', host: 'h1' }, signer, Date.now() + 1)), Date.now());
    expect(asked).toHaveLength(2);
    await b.stop();
  });
});
