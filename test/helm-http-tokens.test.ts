/**
 * The Helm chart's HTTP API tokens (helm/ferry): a viewer and an operator token generated into a
 * Secret, only their hashes for the coordinator (in the format it reads, checked with its own
 * reader), the ServiceMonitor scraping with the viewer token, rotation through values.
 * helm is built by the set-up into .tools/bin/helm (as for test/helm.test.ts).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpAuthenticator, hashHttpToken, newHttpToken } from '@ferry/coordinator';
import { CHART, find, HELM, render as renderChart, type K8sObject } from './helpers/helm';
import type { JsonDoc } from './helpers/json-doc';

const SERVICE_MONITOR_API = 'monitoring.coreos.com/v1';
const render = (extra: string[] = []): Promise<K8sObject[]> => renderChart([], extra);

beforeAll(() => {
  if (!existsSync(HELM)) throw new Error(`${HELM} is missing: run \`bash scripts/setup.sh\` (it builds helm)`);
});

test('HTTP API tokens: generated viewer and operator tokens, only their hashes for the coordinator (a 0600 copy), the ServiceMonitor scrapes with the viewer token', async () => {
  const objects = await render(['--api-versions', SERVICE_MONITOR_API]);
  const secret = find(objects, 'Secret', 'rel-ferry-http-tokens').stringData;
  expect(secret['viewer-token']).toMatch(/^ferry_[A-Za-z0-9]{43}$/);
  expect(secret['operator-token']).toMatch(/^ferry_[A-Za-z0-9]{43}$/);
  expect(secret['viewer-token']).not.toBe(secret['operator-token']);
  // The coordinator's file has only the hashes, in the format it reads (same checks as at run time).
  const dir = mkdtempSync(join(tmpdir(), 'ferry-helm-http-'));
  try {
    const file = join(dir, 'tokens.json');
    writeFileSync(file, secret['tokens.json'], { mode: 0o600 });
    expect(secret['tokens.json']).not.toContain(secret['operator-token']);
    const auth = new HttpAuthenticator(file);
    expect(auth.authenticate(`Bearer ${secret['viewer-token']}`)).toEqual({ name: 'chart-viewer', role: 'viewer' });
    expect(auth.authenticate(`Bearer ${secret['operator-token']}`)).toEqual({ name: 'chart-operator', role: 'operator' });
    expect(() => auth.authenticate(`Bearer ${newHttpToken()}`)).toThrow(/unknown or revoked/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const pod = find(objects, 'Deployment', 'rel-ferry-coordinator').spec.template.spec;
  const coord = pod.containers[0];
  expect(coord.env).toContainEqual({ name: 'FERRY_HTTP_TOKENS', value: '/run/ferry-http/tokens.json' });
  expect(pod.initContainers.find((c: JsonDoc) => c.name === 'http-tokens').command).toEqual([
    'install', '-m', '0600', '-o', '10001', '-g', '10001', '/run/ferry-http-secret/tokens.json', '/run/ferry-http/tokens.json',
  ]);
  // The coordinator mounts only the hashes file, never the tokens themselves.
  expect(pod.volumes.find((v: JsonDoc) => v.name === 'http-tokens').secret).toEqual({ secretName: 'rel-ferry-http-tokens', defaultMode: 0o400, items: [{ key: 'tokens.json', path: 'tokens.json' }] });
  expect(pod.volumes.find((v: JsonDoc) => v.name === 'http-tokens-copy').emptyDir.medium).toBe('Memory');
  const sm = find(objects, 'ServiceMonitor', 'rel-ferry');
  expect(sm.spec.endpoints[0].authorization).toEqual({ type: 'Bearer', credentials: { name: 'rel-ferry-http-tokens', key: 'viewer-token' } });

  // Tokens given in values are used as is (rotation), and a new one changes the pods' checksum so they restart.
  const given = 'ferry_' + 'r'.repeat(40);
  const rotated = await render(['--set', `coordinator.http.tokens.operator=${given}`]);
  const rotatedSecret = find(rotated, 'Secret', 'rel-ferry-http-tokens').stringData;
  expect(rotatedSecret['operator-token']).toBe(given);
  expect(JSON.parse(rotatedSecret['tokens.json']).tokens).toContainEqual({ name: 'chart-operator', role: 'operator', sha256: hashHttpToken(given) });
  const checksum = (o: K8sObject[]) => find(o, 'Deployment', 'rel-ferry-coordinator').spec.template.metadata.annotations['checksum/http-tokens'];
  const both = ['--set', `coordinator.http.tokens.operator=${given}`, '--set', `coordinator.http.tokens.viewer=${given}v`];
  const again = await render(both);
  // The same tokens (an upgrade that keeps them): the same checksum, no restart.
  expect(checksum(await render(both))).toBe(checksum(again));
  expect(checksum(again)).not.toBe(checksum(await render(['--set', `coordinator.http.tokens.operator=${given}x`, '--set', `coordinator.http.tokens.viewer=${given}v`])));
  await expect(render(['--set', 'coordinator.http.tokens.viewer=short'])).rejects.toThrow(/viewer/);
  // NOTES (not rendered by `helm template`) say how to read a token.
  expect(readFileSync(join(CHART, 'templates', 'NOTES.txt'), 'utf8')).toContain(`get secret {{ include "ferry.fullname" . }}-http-tokens -o jsonpath='{.data.operator-token}' | base64 -d`);
});
