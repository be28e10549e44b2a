import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFailedPrecondition } from './errors';
import { loadKafkaCredentials } from './kafka-credentials';
import { kafkaRequestAuthProblem, kafkaRequestSigningInput, loadKafkaRequestKeys, loadKafkaRequestSigner, signKafkaRequest } from './kafka-request-auth';

const NOW = 1_800_000_000_000;
const TEN_MIN = 10 * 60_000;
const key = randomBytes(32);
const keys = new Map([['autoscaler', [key]]]);
const signer = { requester: 'autoscaler', key };
const req = { requestId: 'r1', kind: 'migrate', workload: 'w', to: 'h2' };

test('a request signed by a known requester, recently, passes; with a second key during rotation too', () => {
  const s = signKafkaRequest(req, signer, NOW);
  expect(s.auth).toEqual({ requester: 'autoscaler', issuedAt: NOW, mac: expect.stringMatching(/^[0-9a-f]{64}$/) });
  expect(kafkaRequestAuthProblem(req, s.auth, keys, NOW + 5_000, TEN_MIN)).toBeNull();
  const next = randomBytes(32);
  const rotating = new Map([['autoscaler', [key, next]]]);
  expect(kafkaRequestAuthProblem(req, signKafkaRequest(req, { requester: 'autoscaler', key: next }, NOW).auth, rotating, NOW, TEN_MIN)).toBeNull();
});

test('the documented signing input: length-prefixed fields, absent ones empty', () => {
  const input = kafkaRequestSigningInput({ requestId: 'r2', kind: 'drain', host: 'h1' }, 'a', 5);
  const field = (s: string) => Buffer.concat([Buffer.from([0, 0, 0, Buffer.byteLength(s)]), Buffer.from(s)]);
  expect(input).toEqual(Buffer.concat(['ferry-kafka-request-v1', 'a', '5', 'r2', 'drain', '', '', 'h1'].map(field)));
  // What a signer in another language computes.
  const mac = createHmac('sha256', key).update(input).digest('hex');
  expect(signKafkaRequest({ requestId: 'r2', kind: 'drain', host: 'h1' }, { requester: 'a', key }, 5).auth.mac).toBe(mac);
});

test('unsigned, malformed, unknown requester, other key, tampered fields, old or future-dated: each named', () => {
  const s = signKafkaRequest(req, signer, NOW);
  const problem = (r: typeof req, auth: unknown, now = NOW) => kafkaRequestAuthProblem(r, auth, keys, now, TEN_MIN);
  expect(problem(req, undefined)).toMatch(/not signed/);
  expect(problem(req, { requester: 'autoscaler' })).toMatch(/malformed auth/);
  expect(problem(req, { ...s.auth, mac: 'zz' })).toMatch(/malformed auth: mac/);
  expect(problem(req, signKafkaRequest(req, { requester: 'someone', key }, NOW).auth)).toMatch(/unknown requester "someone"/);
  expect(problem(req, signKafkaRequest(req, { requester: 'autoscaler', key: randomBytes(32) }, NOW).auth)).toMatch(/bad signature/);
  expect(problem({ ...req, to: 'h3' }, s.auth)).toMatch(/bad signature/);
  expect(problem({ ...req, requestId: 'r9' }, s.auth)).toMatch(/bad signature/);
  expect(problem(req, { ...s.auth, issuedAt: NOW + 1 })).toMatch(/bad signature/);
  expect(problem(req, s.auth, NOW + TEN_MIN + 1)).toMatch(/signed 600 s ago.*not replayed/);
  expect(problem(req, signKafkaRequest(req, signer, NOW + 120_000).auth)).toMatch(/in the future/);
  expect(() => signKafkaRequest(req, { requester: 'a', key: randomBytes(16) })).toThrow(/at least 32 bytes/);
});

test('key and credentials files: 0600 only, checked, never quoting a secret', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-kafka-'));
  const write = (name: string, value: unknown, mode = 0o600) => {
    const f = join(dir, name);
    writeFileSync(f, typeof value === 'string' ? value : JSON.stringify(value));
    chmodSync(f, mode);
    return f;
  };
  const b64 = key.toString('base64');
  expect(loadKafkaRequestSigner(write('signer.json', { v: 1, requester: 'autoscaler', key: b64 }))).toEqual(signer);
  expect(loadKafkaRequestKeys(write('keys.json', { v: 1, requesters: { autoscaler: [b64] } }))).toEqual(keys);
  const open = write('open.json', { v: 1, requester: 'autoscaler', key: b64 }, 0o640);
  expect(() => loadKafkaRequestSigner(open)).toThrow(/mode 640.*chmod 600/);
  expect(() => loadKafkaRequestKeys(write('short.json', { v: 1, requesters: { autoscaler: [randomBytes(8).toString('base64')] } }))).toThrow(/at least 32 bytes/);
  const creds = { v: 1, mechanism: 'scram-sha-512', username: 'coordinator', password: 'p'.repeat(32) };
  expect(loadKafkaCredentials(write('creds.json', creds))).toEqual(creds);
  try {
    loadKafkaCredentials(write('bad.json', `{"password": "${'s'.repeat(20)}"`));
    throw new Error('not refused');
  } catch (err) {
    expect(isFailedPrecondition(err)).toBe(true);
    expect((err as Error).message).not.toContain('sss');
  }
});
