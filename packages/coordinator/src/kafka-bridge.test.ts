import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signKafkaRequest } from '@ferry/protocol';
import { DEFAULT_MAX_REQUEST_AGE_MS, KafkaRequest, kafkaClientSecurity, requestAuthProblem, staleRequestProblem } from './kafka-bridge';

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
