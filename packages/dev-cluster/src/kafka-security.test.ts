import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AclOperationTypes, AclResourceTypes, ResourcePatternTypes } from 'kafkajs';
import { loadKafkaCredentials, loadKafkaRequestKeys, loadKafkaRequestSigner } from '@ferry/protocol';
import { devKafkaAcls, devKafkaCoordinatorEnv, makeKafkaBrokerSecrets, scramFormatArgs, secureBrokerProperties } from './kafka-security';

test('ACLs: the coordinator reads requests and writes events, the autoscaler the other way round, nothing else', () => {
  // kafkajs's enums are plain objects at run time: no reverse mapping.
  const nameOf = (e: object, v: number) => Object.entries(e).find(([, x]) => x === v)![0];
  const acls = devKafkaAcls({ events: 'ev', requests: 'rq' }).map(
    (a) =>
      `${a.principal} ${nameOf(AclOperationTypes, a.operation)} ${nameOf(AclResourceTypes, a.resourceType)}:${a.resourceName}${a.resourcePatternType === ResourcePatternTypes.PREFIXED ? '*' : ''}`,
  );
  expect(acls.sort()).toEqual(
    [
      'User:autoscaler DESCRIBE TOPIC:ev',
      'User:autoscaler DESCRIBE TOPIC:rq',
      'User:autoscaler READ GROUP:autoscaler*',
      'User:autoscaler READ TOPIC:ev',
      'User:autoscaler WRITE TOPIC:rq',
      'User:coordinator DESCRIBE TOPIC:ev',
      'User:coordinator DESCRIBE TOPIC:rq',
      'User:coordinator READ GROUP:ferry-coordinator',
      'User:coordinator READ TOPIC:rq',
      'User:coordinator WRITE TOPIC:ev',
    ].sort(),
  );
});

test('broker secrets: a 0700 dir of 0600 files in ferry formats, no CA key kept, a SASL_SSL listener and a deny-by-default authorizer', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'ferry-kafka-')), 'auth');
  const s = await makeKafkaBrokerSecrets(dir);
  expect(statSync(dir).mode & 0o777).toBe(0o700);
  for (const f of [s.keystoreFile, s.files.requestKeys, s.files.autoscalerRequestKey, ...Object.values(s.files.credentials)]) expect(statSync(f).mode & 0o777).toBe(0o600);
  expect(() => statSync(join(dir, 'ca.key'))).toThrow();
  expect(loadKafkaCredentials(s.files.credentials.coordinator)).toEqual({ v: 1, mechanism: 'scram-sha-512', username: 'coordinator', password: s.passwords.coordinator });
  const signer = loadKafkaRequestSigner(s.files.autoscalerRequestKey);
  expect(loadKafkaRequestKeys(s.files.requestKeys).get('autoscaler')).toEqual([signer.key]);
  expect(new Set(Object.values(s.passwords)).size).toBe(3);
  const props = secureBrokerProperties(s, 9092, 9093);
  expect(props).toEqual(
    expect.arrayContaining([
      'listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT',
      'listeners=CLIENT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093',
      'allow.everyone.if.no.acl.found=false',
      'super.users=User:admin;User:controller',
    ]),
  );
  expect(scramFormatArgs(s)).toContain(`SCRAM-SHA-512=[name=autoscaler,password=${s.passwords.autoscaler}]`);
  expect(devKafkaCoordinatorEnv({ brokers: '127.0.0.1:9092', security: s.files })).toEqual({
    FERRY_KAFKA_BROKERS: '127.0.0.1:9092',
    FERRY_KAFKA_TLS_CA_FILE: s.files.caFile,
    FERRY_KAFKA_CREDENTIALS: s.files.credentials.coordinator,
    FERRY_KAFKA_REQUEST_KEYS: s.files.requestKeys,
  });
  expect(devKafkaCoordinatorEnv({ brokers: 'b:1', security: null })).toEqual({ FERRY_KAFKA_BROKERS: 'b:1' });
});
