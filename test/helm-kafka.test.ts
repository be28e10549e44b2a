/**
 * The Helm chart's Kafka settings (helm/ferry, `kafka.*`): TLS and SASL to an external Kafka, the
 * request-signing keys, and what the coordinator's pod makes of them. Beside helm.test.ts, which
 * holds the rest of the chart's tests.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kafkaRequestAuthProblem, loadKafkaCredentials, loadKafkaRequestKeys, loadKafkaRequestSigner, signKafkaRequest } from '@ferry/protocol';
import { CHART, find, HELM, helm, render } from './helpers/helm';
import type { JsonDoc } from './helpers/json-doc';

beforeAll(() => {
  if (!existsSync(HELM)) throw new Error(`${HELM} is missing: run \`bash scripts/setup.sh\` (it builds helm)`);
});

test('Kafka over TLS with SASL/SCRAM: settings, a 0600 copy of the credentials and request keys for the coordinator, one signing key per requester', async () => {
  const objects = await render(['kafka.yaml']);
  const config = find(objects, 'ConfigMap', 'rel-ferry-config');
  expect(config.data).toMatchObject({
    FERRY_KAFKA_BROKERS: 'kafka-0.kafka:9093,kafka-1.kafka:9093',
    FERRY_KAFKA_EVENTS_TOPIC: 'ferry.events.prod',
    FERRY_KAFKA_REQUESTS_TOPIC: 'ferry.requests.prod',
    FERRY_KAFKA_REQUEST_KEYS: '/run/ferry-kafka/request-keys.json',
    FERRY_KAFKA_CREDENTIALS: '/run/ferry-kafka/credentials.json',
    FERRY_KAFKA_TLS_CA_FILE: '/run/ferry-kafka-tls/ca.crt',
  });
  const data = find(objects, 'Secret', 'rel-ferry-kafka').stringData;
  expect(JSON.parse(data['credentials.json'])).toEqual({ v: 1, mechanism: 'scram-sha-512', username: 'ferry-coordinator', password: 'a-long-enough-kafka-password' });
  // The files as the coordinator and each autoscaler read them: a request one signs, the coordinator accepts.
  const dir = mkdtempSync(join(tmpdir(), 'ferry-helm-kafka-'));
  try {
    const file = (name: string) => {
      const f = join(dir, name);
      writeFileSync(f, data[name], { mode: 0o600 });
      return f;
    };
    const keys = loadKafkaRequestKeys(file('request-keys.json'));
    expect([...keys.keys()]).toEqual(['autoscaler', 'autoscaler-2']);
    for (const requester of ['autoscaler', 'autoscaler-2']) {
      const signer = loadKafkaRequestSigner(file(`request-key-${requester}.json`));
      expect(signer.requester).toBe(requester);
      const req = { requestId: 'r1', kind: 'drain', host: 'n1' };
      expect(kafkaRequestAuthProblem(req, signKafkaRequest(req, signer).auth, keys, Date.now(), 60_000)).toBeNull();
    }
    expect(keys.get('autoscaler')![0].equals(keys.get('autoscaler-2')![0])).toBe(false);
    expect(loadKafkaCredentials(file('credentials.json')).username).toBe('ferry-coordinator');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const pod = find(objects, 'Deployment', 'rel-ferry-coordinator').spec.template.spec;
  const init = pod.initContainers.find((c: JsonDoc) => c.name === 'kafka-secrets');
  expect(init.command).toEqual([
    'install', '-m', '0600', '-o', '10001', '-g', '10001', '-t', '/run/ferry-kafka', '/run/ferry-kafka-secret/request-keys.json', '/run/ferry-kafka-secret/credentials.json',
  ]);
  expect(init.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['CHOWN', 'FOWNER'] });
  const volumes = Object.fromEntries(pod.volumes.map((v: JsonDoc) => [v.name, v]));
  expect(volumes['kafka-secret'].projected.sources).toEqual([
    { secret: { name: 'rel-ferry-kafka', items: [{ key: 'request-keys.json', path: 'request-keys.json' }] } },
    { secret: { name: 'rel-ferry-kafka', items: [{ key: 'credentials.json', path: 'credentials.json' }] } },
  ]);
  expect(volumes['kafka-secret-copy'].emptyDir.medium).toBe('Memory');
  expect(volumes['kafka-tls-ca'].secret).toMatchObject({ secretName: 'kafka-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] });
  const mounts = pod.containers[0].volumeMounts.map((m: JsonDoc) => m.mountPath);
  expect(mounts).toEqual(expect.arrayContaining(['/run/ferry-kafka', '/run/ferry-kafka-tls']));
  expect(mounts).not.toContain('/run/ferry-kafka-secret');

  // The operator's own Secret for the credentials; TLS with the system CAs; no SASL.
  const own = await render(['kafka.yaml'], ['--set', 'kafka.sasl.existingSecret=my-kafka', '--set', 'kafka.sasl.password=', '--set', 'kafka.tls.caSecret=']);
  expect(find(own, 'Secret', 'rel-ferry-kafka').stringData['credentials.json']).toBeUndefined();
  expect(find(own, 'ConfigMap', 'rel-ferry-config').data).toMatchObject({ FERRY_KAFKA_TLS: 'on' });
  const ownPod = find(own, 'Deployment', 'rel-ferry-coordinator').spec.template.spec;
  expect(ownPod.volumes.find((v: JsonDoc) => v.name === 'kafka-secret').projected.sources[1]).toEqual({
    secret: { name: 'my-kafka', items: [{ key: 'kafka-credentials.json', path: 'credentials.json' }] },
  });
  const plain = find(await render([], ['--set', 'kafka.enabled=true', '--set', 'kafka.brokers[0]=k:9092']), 'ConfigMap', 'rel-ferry-config').data;
  expect(plain.FERRY_KAFKA_CREDENTIALS).toBeUndefined();
  expect(plain.FERRY_KAFKA_TLS).toBeUndefined();
  expect(plain.FERRY_KAFKA_REQUEST_KEYS).toBe('/run/ferry-kafka/request-keys.json');

  // A fixed key (offline rendering) is used as given, the other requester's generated.
  const fixed = randomBytes(32).toString('base64');
  const pinned = find(await render(['kafka.yaml'], ['--set', `kafka.requestSigning.keys.autoscaler=${fixed}`]), 'Secret', 'rel-ferry-kafka').stringData;
  expect(JSON.parse(pinned['request-key-autoscaler.json'])).toEqual({ v: 1, requester: 'autoscaler', key: fixed });
  expect(JSON.parse(pinned['request-keys.json']).requesters.autoscaler).toEqual([fixed]);
  expect(JSON.parse(pinned['request-keys.json']).requesters['autoscaler-2'][0]).not.toBe(fixed);
  const shortKey = await helm(['template', 'rel', CHART, '-f', join(CHART, 'ci', 'kafka.yaml'), '--set', 'kafka.requestSigning.keys.autoscaler=c2hvcnQ=']);
  expect(shortKey.code).not.toBe(0);

  // Refused: a mechanism without a password, PLAIN without TLS, a bad requester name.
  const noPassword = await helm(['template', 'rel', CHART, '--set', 'kafka.enabled=true', '--set', 'kafka.brokers[0]=k:9092', '--set', 'kafka.sasl.mechanism=scram-sha-512']);
  expect(noPassword.stderr).toContain('give kafka.sasl.password or kafka.sasl.existingSecret');
  const plainText = await helm(['template', 'rel', CHART, '-f', join(CHART, 'ci', 'kafka.yaml'), '--set', 'kafka.sasl.mechanism=plain', '--set', 'kafka.tls.enabled=false']);
  expect(plainText.stderr).toContain('it needs kafka.tls.enabled');
  const badName = await helm(['template', 'rel', CHART, '-f', join(CHART, 'ci', 'kafka.yaml'), '--set', 'kafka.requestSigning.requesters[0]=Bad Name']);
  expect(badName.code).not.toBe(0);
});
