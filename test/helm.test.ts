/**
 * The Helm chart (helm/ferry): `helm lint` and `helm template` with several values files, and
 * assertions on the rendered objects. helm is built by the set-up into .tools/bin/helm.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './helpers/cluster';

import * as yaml from 'js-yaml';

const exec = promisify(execFile);
/** The one place helm lives (scripts/install-helm.sh puts it there). */
const HELM = join(REPO, '.tools', 'bin', 'helm');
const CHART = join(REPO, 'helm', 'ferry');
const SERVICE_MONITOR_API = 'monitoring.coreos.com/v1';

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: any };

async function helm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(HELM, args, { maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function render(valuesFiles: string[] = [], extra: string[] = []): Promise<K8sObject[]> {
  const args = ['template', 'rel', CHART, '--namespace', 'ferry-system', ...valuesFiles.flatMap((f) => ['-f', join(CHART, 'ci', f)]), ...extra];
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed: ${r.stderr}`);
  return (yaml.loadAll(r.stdout) as (K8sObject | null)[]).filter((o): o is K8sObject => o !== null);
}

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (o === undefined) throw new Error(`no ${kind} ${name} in: ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

function envOf(container: any): Record<string, any> {
  return Object.fromEntries((container.env as any[]).map((e) => [e.name, e.value ?? e.valueFrom]));
}

beforeAll(() => {
  if (!existsSync(HELM)) throw new Error(`${HELM} is missing: run \`bash scripts/setup.sh\` (it builds helm)`);
});

describe('helm chart', () => {
  test('lints with default and every ci values file', async () => {
    for (const values of [[], ['external.yaml'], ['kafka.yaml'], ['scheduling.yaml']]) {
      const r = await helm(['lint', CHART, '--strict', ...values.flatMap((f) => ['-f', join(CHART, 'ci', f)])]);
      expect({ values, code: r.code, out: r.code === 0 ? '' : r.stdout + r.stderr }).toEqual({ values, code: 0, out: '' });
    }
  });

  test('default values: privileged hostPID agent with its mounts, coordinator with probes, bundled NATS and Redis', async () => {
    const objects = await render();
    const ds = find(objects, 'DaemonSet', 'rel-ferry-agent');
    const pod = ds.spec.template.spec;
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBe(true);
    const agent = pod.containers[0];
    expect(agent.securityContext.privileged).toBe(true);
    const mounts = Object.fromEntries(agent.volumeMounts.map((m: any) => [m.mountPath, m]));
    expect(Object.keys(mounts).sort()).toEqual(['/dev/fuse', '/run/ferry', '/sys/fs/cgroup', '/var/lib/ferry']);
    expect(mounts['/run/ferry'].mountPropagation).toBe('Bidirectional');
    const volumes = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v.hostPath?.path]));
    expect(volumes).toEqual({ data: '/var/lib/ferry', 'run-ferry': '/run/ferry', cgroup: '/sys/fs/cgroup', 'dev-fuse': '/dev/fuse' });
    const agentEnv = envOf(agent);
    expect(agentEnv.FERRY_HOST).toEqual({ fieldRef: { fieldPath: 'spec.nodeName' } });
    expect(agentEnv.FERRY_ADDRESS).toEqual({ fieldRef: { fieldPath: 'status.hostIP' } });
    expect(agentEnv.FERRY_NATS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'nats-url' } });
    expect(agentEnv.FERRY_WORK_DIR).toBe('/run/ferry/work');
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toBeUndefined();

    const deploy = find(objects, 'Deployment', 'rel-ferry-coordinator');
    expect(deploy.spec.replicas).toBe(2);
    const coord = deploy.spec.template.spec.containers[0];
    expect(coord.livenessProbe.httpGet).toEqual({ path: '/metrics', port: 'http' });
    expect(coord.readinessProbe.httpGet).toEqual({ path: '/metrics', port: 'http' });
    expect(coord.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    const coordEnv = envOf(coord);
    expect(coordEnv.FERRY_COORDINATOR_ID).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
    expect(coordEnv.FERRY_NATS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'nats-url' } });
    expect(coordEnv.FERRY_REDIS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'redis-url' } });
    expect(coordEnv.FERRY_FILESYSTEMS).toBe('/etc/ferry/filesystems.json');
    expect(coordEnv.FERRY_HTTP_ADDRESS).toBe('0.0.0.0');
    expect(coord.envFrom).toEqual([{ configMapRef: { name: 'rel-ferry-config' } }]);
    const config = find(objects, 'ConfigMap', 'rel-ferry-config');
    expect(config.data.FERRY_LEASE_TTL_MS).toBe('10000');
    expect(config.data.FERRY_KAFKA_BROKERS).toBeUndefined();
    expect(JSON.parse(find(objects, 'ConfigMap', 'rel-ferry-filesystems').data['filesystems.json'])).toEqual([]);

    // The bundled NATS and Redis, reached through URLs in the Secret that carry generated passwords.
    const secret = find(objects, 'Secret', 'rel-ferry-credentials');
    expect(secret.stringData['nats-password']).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(secret.stringData['nats-url']).toBe(`nats://ferry:${secret.stringData['nats-password']}@rel-ferry-nats:4222`);
    expect(secret.stringData['redis-url']).toBe(`redis://:${secret.stringData['redis-password']}@rel-ferry-redis:6379/0`);
    expect(find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec.containers[0].image).toMatch(/^nats:/);
    expect(find(objects, 'StatefulSet', 'rel-ferry-redis').spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('1Gi');
    expect(find(objects, 'Service', 'rel-ferry-coordinator').spec.ports).toEqual([{ name: 'http', port: 9464, targetPort: 'http' }]);
    // No Prometheus operator API: no ServiceMonitor.
    expect(objects.some((o) => o.kind === 'ServiceMonitor')).toBe(false);
  });

  test('external NATS and Redis: the URLs come from values, nothing bundled', async () => {
    const objects = await render(['external.yaml']);
    const secret = find(objects, 'Secret', 'rel-ferry-credentials');
    expect(secret.stringData).toEqual({ 'nats-url': 'nats://ferry:s3cret@nats.messaging.svc:4222', 'redis-url': 'redis://:pw@redis.db.svc:6379/2' });
    expect(objects.filter((o) => /-(nats|redis)$/.test(o.metadata.name))).toEqual([]);
    expect(find(objects, 'ConfigMap', 'rel-ferry-config').data.FERRY_REDIS_PREFIX).toBe('prod:');
  });

  test('Kafka settings reach the coordinator', async () => {
    const config = find(await render(['kafka.yaml']), 'ConfigMap', 'rel-ferry-config');
    expect(config.data).toMatchObject({
      FERRY_KAFKA_BROKERS: 'kafka-0.kafka:9092,kafka-1.kafka:9092',
      FERRY_KAFKA_EVENTS_TOPIC: 'ferry.events.prod',
      FERRY_KAFKA_REQUESTS_TOPIC: 'ferry.requests.prod',
    });
  });

  test('scheduling, replicas, filesystems and a ServiceMonitor when the operator API is served', async () => {
    const objects = await render(['scheduling.yaml'], ['--api-versions', SERVICE_MONITOR_API]);
    const pod = find(objects, 'DaemonSet', 'rel-ferry-agent').spec.template.spec;
    // Helm merges maps: the default OS label stays beside the custom one.
    expect(pod.nodeSelector).toEqual({ 'ferry.example/migratable': 'true', 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toEqual([{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key).toBe('kubernetes.io/arch');
    const deploy = find(objects, 'Deployment', 'rel-ferry-coordinator');
    expect(deploy.spec.replicas).toBe(3);
    expect(deploy.spec.template.spec.affinity.podAntiAffinity).toBeDefined();
    expect(find(objects, 'ConfigMap', 'rel-ferry-config').data.FERRY_LEASE_TTL_MS).toBe('5000');
    expect(JSON.parse(find(objects, 'ConfigMap', 'rel-ferry-filesystems').data['filesystems.json'])).toEqual([
      { name: 'shared', type: 'nfs', source: 'nfs.storage.svc:/export/ferry', options: { vers: '4.2' } },
    ]);
    const sm = find(objects, 'ServiceMonitor', 'rel-ferry');
    expect(sm.apiVersion).toBe(SERVICE_MONITOR_API);
    expect(sm.metadata.labels.release).toBe('prometheus');
    expect(sm.spec.endpoints).toEqual([{ port: 'http', path: '/metrics', interval: '30s' }]);
    // The toggle turns it off even where the API exists.
    const off = await render([], ['--api-versions', SERVICE_MONITOR_API, '--set', 'metrics.serviceMonitor.enabled=false']);
    expect(off.some((o) => o.kind === 'ServiceMonitor')).toBe(false);
  });

  test('the schema and the chart refuse bad values', async () => {
    const bad = await helm(['template', 'rel', CHART, '-f', join(CHART, 'ci', 'bad-replicas.yaml')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/coordinator\/replicas.*got string, want integer/);
    const lint = await helm(['lint', CHART, '-f', join(CHART, 'ci', 'bad-replicas.yaml')]);
    expect(lint.code).not.toBe(0);
    for (const set of ['agent.workDir=/tmp/x', 'logLevel=loud', 'nats.url=http://x', 'unknownKey=1', 'cluster.filesystems[0].name=x']) {
      const r = await helm(['template', 'rel', CHART, '--set', set]);
      expect({ set, code: r.code }).toEqual({ set, code: 1 });
    }
    const noNats = await helm(['template', 'rel', CHART, '--set', 'nats.enabled=false']);
    expect(noNats.code).not.toBe(0);
    expect(noNats.stderr).toContain('set nats.url');
  });
});
