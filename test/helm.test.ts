/**
 * The Helm chart (helm/ferry): `helm lint` and `helm template` with several values files, and
 * assertions on the rendered objects. helm is built by the set-up into .tools/bin/helm.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CHART, envOf, find, HELM, helm, render, startRenderedNats } from './helpers/helm';
import type { JsonDoc } from './helpers/json-doc';

const SERVICE_MONITOR_API = 'monitoring.coreos.com/v1';

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
    const mounts = Object.fromEntries(agent.volumeMounts.map((m: JsonDoc) => [m.mountPath, m]));
    expect(Object.keys(mounts).sort()).toEqual(['/dev/fuse', '/run/ferry', '/run/ferry-nats', '/run/ferry-nats-tls', '/sys/fs/cgroup', '/var/lib/ferry']);
    expect(mounts['/run/ferry'].mountPropagation).toBe('Bidirectional');
    const volumes = Object.fromEntries(pod.volumes.map((v: JsonDoc) => [v.name, v.hostPath?.path]));
    expect(volumes).toEqual({ data: '/var/lib/ferry', 'run-ferry': '/run/ferry', cgroup: '/sys/fs/cgroup', 'dev-fuse': '/dev/fuse', 'nats-credentials': undefined, 'nats-tls-ca': undefined });
    // The agent's own credentials file, root-only (the agent runs as root, the file's owner).
    expect(pod.volumes.find((v: JsonDoc) => v.name === 'nats-credentials').secret).toEqual({
      secretName: 'rel-ferry-credentials',
      defaultMode: 0o400,
      items: [{ key: 'nats-credentials-agent.json', path: 'credentials.json' }],
    });
    const agentEnv = envOf(agent);
    expect(agentEnv.FERRY_HOST).toEqual({ fieldRef: { fieldPath: 'spec.nodeName' } });
    expect(agentEnv.FERRY_ADDRESS).toEqual({ fieldRef: { fieldPath: 'status.hostIP' } });
    expect(agentEnv.FERRY_NATS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'nats-url' } });
    expect(agentEnv.FERRY_WORK_DIR).toBe('/run/ferry/work');
    expect(agentEnv.FERRY_NATS_CREDENTIALS).toBe('/run/ferry-nats/credentials.json');
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toBeUndefined();

    const deploy = find(objects, 'Deployment', 'rel-ferry-coordinator');
    expect(deploy.spec.replicas).toBe(2);
    const coord = deploy.spec.template.spec.containers[0];
    // /metrics needs a token; /healthz does not.
    expect(coord.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(coord.readinessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(coord.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    const coordEnv = envOf(coord);
    expect(coordEnv.FERRY_COORDINATOR_ID).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
    expect(coordEnv.FERRY_NATS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'nats-url' } });
    expect(coordEnv.FERRY_REDIS_URL).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'redis-url' } });
    expect(coordEnv.FERRY_FILESYSTEMS).toBe('/etc/ferry/filesystems.json');
    // The coordinator (uid 10001) reads a 0600 copy of its credentials an init container makes in memory.
    expect(coordEnv.FERRY_NATS_CREDENTIALS).toBe('/run/ferry-nats/credentials.json');
    const coordPod = deploy.spec.template.spec;
    expect(coordPod.initContainers.find((c: JsonDoc) => c.name === 'nats-credentials').command).toEqual([
      'install', '-m', '0600', '-o', '10001', '-g', '10001', '/run/ferry-nats-secret/credentials.json', '/run/ferry-nats/credentials.json',
    ]);
    expect(coordPod.volumes.find((v: JsonDoc) => v.name === 'nats-credentials').secret.items).toEqual([{ key: 'nats-credentials-coordinator.json', path: 'credentials.json' }]);
    expect(coordPod.volumes.find((v: JsonDoc) => v.name === 'nats-credentials-copy').emptyDir.medium).toBe('Memory');
    expect(coord.volumeMounts.map((m: JsonDoc) => m.mountPath).sort()).toEqual(['/etc/ferry', '/run/ferry-http', '/run/ferry-nats', '/run/ferry-nats-tls']);
    expect(coordEnv.FERRY_HTTP_ADDRESS).toBe('0.0.0.0');
    expect(coord.envFrom).toEqual([{ configMapRef: { name: 'rel-ferry-config' } }]);
    const config = find(objects, 'ConfigMap', 'rel-ferry-config');
    expect(config.data.FERRY_LEASE_TTL_MS).toBe('10000');
    expect(config.data.FERRY_KAFKA_BROKERS).toBeUndefined();
    expect(JSON.parse(find(objects, 'ConfigMap', 'rel-ferry-filesystems').data['filesystems.json'])).toEqual([]);

    // The bundled NATS: one user per principal with a generated password, each principal's
    // credentials file in the Secret, a URL without credentials. Redis: a password in its URL.
    const secret = find(objects, 'Secret', 'rel-ferry-credentials');
    expect(secret.stringData['nats-url']).toBe('nats://rel-ferry-nats:4222');
    const passwords = ['coordinator', 'agent', 'cli'].map((p) => secret.stringData[`nats-${p}-password`]);
    for (const pw of passwords) expect(pw).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(new Set(passwords).size).toBe(3);
    const tls = { caFile: '/run/ferry-nats-tls/ca.crt' };
    expect(JSON.parse(secret.stringData['nats-credentials-coordinator.json'])).toEqual({ v: 1, user: 'coordinator', password: passwords[0], tls });
    expect(JSON.parse(secret.stringData['nats-credentials-agent.json'])).toEqual({ v: 1, user: 'agent', password: passwords[1], inboxPrefix: '_INBOX_agent', tls });
    expect(JSON.parse(secret.stringData['nats-credentials-cli.json'])).toEqual({ v: 1, user: 'cli', password: passwords[2], inboxPrefix: '_INBOX_cli', tls });
    const natsEnv = envOf(find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec.containers[0]);
    expect(natsEnv.NATS_AGENT_PASSWORD).toEqual({ secretKeyRef: { name: 'rel-ferry-credentials', key: 'nats-agent-password' } });
    // TLS by default, with the chart's own CA (the next test looks at it).
    expect(find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf']).toMatch(/tls \{/);
    expect(secret.stringData['redis-url']).toBe(`redis://:${secret.stringData['redis-password']}@rel-ferry-redis:6379/0`);
    expect(find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec.containers[0].image).toMatch(/^nats:/);
    expect(find(objects, 'StatefulSet', 'rel-ferry-redis').spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('1Gi');
    expect(find(objects, 'Service', 'rel-ferry-coordinator').spec.ports).toEqual([{ name: 'http', port: 9464, targetPort: 'http' }]);
    // No Prometheus operator API: no ServiceMonitor.
    expect(objects.some((o) => o.kind === 'ServiceMonitor')).toBe(false);

    // No pod gets a service-account token (none talks to the Kubernetes API; the agent is privileged with hostPID).
    for (const [kind, name] of [['DaemonSet', 'rel-ferry-agent'], ['Deployment', 'rel-ferry-coordinator'], ['Deployment', 'rel-ferry-nats'], ['StatefulSet', 'rel-ferry-redis']]) {
      expect([name, find(objects, kind, name).spec.template.spec.automountServiceAccountToken]).toEqual([name, false]);
    }
    // NATS has no monitoring port (it would show every connection and subject); its probes use the client port.
    const natsPod = find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec.containers[0];
    expect(natsPod.ports.map((p: JsonDoc) => p.containerPort)).toEqual([4222]);
    expect(natsPod.livenessProbe.tcpSocket).toEqual({ port: 'client' });
    expect(find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf']).not.toMatch(/http_port|8222/);
    // Redis takes connections from the coordinator's pods only; the NATS policy is opt-in (node CIDRs needed).
    const redisPolicy = find(objects, 'NetworkPolicy', 'rel-ferry-redis');
    expect(redisPolicy.spec.ingress).toEqual([
      { from: [{ podSelector: { matchLabels: expect.objectContaining({ 'app.kubernetes.io/component': 'coordinator' }) } }], ports: [{ port: 6379 }] },
    ]);
    expect(objects.some((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'rel-ferry-nats')).toBe(false);
  });

  test('the NATS NetworkPolicy, when asked for, admits the coordinator, the agents and the node ranges only', async () => {
    const objects = await render([], ['--set', 'networkPolicy.nats.enabled=true', '--set', 'networkPolicy.nats.nodeCidrs[0]=10.0.0.0/16']);
    const policy = find(objects, 'NetworkPolicy', 'rel-ferry-nats');
    expect(policy.spec.ingress[0].ports).toEqual([{ port: 4222 }]);
    const from = policy.spec.ingress[0].from;
    expect(from.map((p: JsonDoc) => p.podSelector?.matchLabels?.['app.kubernetes.io/component'] ?? p.ipBlock?.cidr)).toEqual(['coordinator', 'agent', '10.0.0.0/16']);
  });

  test('external NATS and Redis: the URLs come from values, nothing bundled', async () => {
    const objects = await render(['external.yaml']);
    const secret = find(objects, 'Secret', 'rel-ferry-credentials');
    expect(secret.stringData).toEqual({ 'nats-url': 'nats://ferry:s3cret@nats.messaging.svc:4222', 'redis-url': 'redis://:pw@redis.db.svc:6379/2' });
    // No chart-made NATS users: no credentials files, no FERRY_NATS_CREDENTIALS.
    const agent = find(objects, 'DaemonSet', 'rel-ferry-agent').spec.template.spec;
    expect(envOf(agent.containers[0]).FERRY_NATS_CREDENTIALS).toBeUndefined();
    expect(agent.volumes.some((v: JsonDoc) => v.name.startsWith('nats-'))).toBe(false);
    // Only the HTTP tokens file's copy: no NATS credentials to copy.
    expect(find(objects, 'Deployment', 'rel-ferry-coordinator').spec.template.spec.initContainers.map((c: JsonDoc) => c.name)).toEqual(['http-tokens']);
    expect(objects.filter((o) => /-(nats|redis)$/.test(o.metadata.name))).toEqual([]);
    expect(find(objects, 'ConfigMap', 'rel-ferry-config').data.FERRY_REDIS_PREFIX).toBe('prod:');
  });

  test('a default restore mode reaches the coordinator; the agent raises the pipe limit CRIU\'s lazy dump needs', async () => {
    expect(find(await render([]), 'ConfigMap', 'rel-ferry-config').data.FERRY_DEFAULT_RESTORE).toBeUndefined();
    const objects = await render([], ['--set', 'cluster.defaultRestore=post-copy']);
    expect(find(objects, 'ConfigMap', 'rel-ferry-config').data).toMatchObject({ FERRY_DEFAULT_RESTORE: 'post-copy' });
    const init = find(objects, 'DaemonSet', 'rel-ferry-agent').spec.template.spec.initContainers;
    expect(init).toEqual([expect.objectContaining({ name: 'pipe-max-size', securityContext: expect.objectContaining({ privileged: true }) })]);
    expect(init[0].command.join(' ')).toContain('4194304 > /proc/sys/fs/pipe-max-size');
    // The schema refuses a mode that does not exist.
    await expect(render([], ['--set', 'cluster.defaultRestore=teleport'])).rejects.toThrow(/defaultRestore/);
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
    expect((sm.metadata as JsonDoc).labels.release).toBe('prometheus');
    expect(sm.spec.endpoints).toEqual([{ port: 'http', path: '/metrics', interval: '30s', authorization: { type: 'Bearer', credentials: { name: 'rel-ferry-http-tokens', key: 'viewer-token' } } }]);
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
    const bundledWithSecret = await helm(['template', 'rel', CHART, '--set', 'nats.existingSecret=mine']);
    expect(bundledWithSecret.code).not.toBe(0);
    expect(bundledWithSecret.stderr).toContain('nats.existingSecret is for an external NATS');
    const externalTls = await helm(['template', 'rel', CHART, '-f', join(CHART, 'ci', 'external.yaml'), '--set', 'nats.tls.existingSecret=x']);
    expect(externalTls.code).not.toBe(0);
    for (const set of ['nats.auth.passwords.agent=short', 'nats.auth.user=ferry', 'nats.auth.passwords.admin=aaaaaaaaaaaaaaaaaaaa']) {
      const r = await helm(['template', 'rel', CHART, '--set', set]);
      expect({ set, code: r.code }).toEqual({ set, code: 1 });
    }
  });

  test('TLS by default: the chart makes a CA and a server certificate for the NATS Service, keeps no CA key, and every pod trusts ca.crt; generate=false is plain TCP', async () => {
    const objects = await render();
    const tlsSecret = find(objects, 'Secret', 'rel-ferry-nats-tls');
    expect(tlsSecret.type).toBe('kubernetes.io/tls');
    expect(Object.keys(tlsSecret.data).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    const pem = (k: string) => Buffer.from(tlsSecret.data[k], 'base64').toString('utf8');
    const ca = new X509Certificate(pem('ca.crt'));
    const cert = new X509Certificate(pem('tls.crt'));
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkHost('rel-ferry-nats')).toBe('rel-ferry-nats');
    expect(cert.checkHost('rel-ferry-nats.ferry-system.svc.cluster.local')).toBe('rel-ferry-nats.ferry-system.svc.cluster.local');
    expect(cert.checkHost('evil.example')).toBeUndefined();
    expect(createPrivateKey(pem('tls.key')).asymmetricKeyType).toBe('rsa');
    // Nowhere a second private key (the CA's): nothing more can be signed with it.
    const secretTexts = objects
      .filter((o) => o.kind === 'Secret')
      .flatMap((o) => [...Object.values((o.data ?? {}) as Record<string, string>).map((v) => Buffer.from(v, 'base64').toString('utf8')), ...Object.values((o.stringData ?? {}) as Record<string, string>)]);
    expect(secretTexts.join('\n').match(/BEGIN [A-Z ]*PRIVATE KEY/g)).toHaveLength(1);
    expect(find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf']).toContain('cert_file: "/etc/nats-tls/tls.crt"');
    const nats = find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec;
    expect(nats.volumes.find((v: JsonDoc) => v.name === 'tls').secret).toEqual({ secretName: 'rel-ferry-nats-tls', defaultMode: 0o400 });
    for (const pod of [find(objects, 'DaemonSet', 'rel-ferry-agent').spec.template.spec, find(objects, 'Deployment', 'rel-ferry-coordinator').spec.template.spec]) {
      expect(pod.volumes.find((v: JsonDoc) => v.name === 'nats-tls-ca').secret.secretName).toBe('rel-ferry-nats-tls');
    }
    const plain = await render([], ['--set', 'nats.tls.generate=false']);
    expect(plain.some((o) => o.kind === 'Secret' && o.metadata.name === 'rel-ferry-nats-tls')).toBe(false);
    expect(find(plain, 'ConfigMap', 'rel-ferry-nats').data['nats.conf']).not.toMatch(/tls \{/);
    expect(JSON.parse(find(plain, 'Secret', 'rel-ferry-credentials').stringData['nats-credentials-agent.json']).tls).toBeUndefined();
    const external = await render(['external.yaml']);
    expect(external.some((o) => o.metadata.name === 'rel-ferry-nats-tls')).toBe(false);
  });

  test('TLS from an existing Secret: nats-server requires it, every pod trusts its ca.crt', async () => {
    const objects = await render([], ['--set', 'nats.tls.existingSecret=ferry-nats-tls', '--set', 'nats.auth.passwords.cli=operator-chosen-password-1']);
    const conf = find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf'];
    expect(conf).toContain('cert_file: "/etc/nats-tls/tls.crt"');
    expect(conf).toContain('key_file: "/etc/nats-tls/tls.key"');
    const nats = find(objects, 'Deployment', 'rel-ferry-nats').spec.template.spec;
    expect(nats.volumes.find((v: JsonDoc) => v.name === 'tls').secret).toEqual({ secretName: 'ferry-nats-tls', defaultMode: 0o400 });
    expect(nats.containers[0].volumeMounts.find((m: JsonDoc) => m.name === 'tls').mountPath).toBe('/etc/nats-tls');
    const secret = find(objects, 'Secret', 'rel-ferry-credentials');
    for (const p of ['coordinator', 'agent', 'cli']) {
      expect(JSON.parse(secret.stringData[`nats-credentials-${p}.json`]).tls).toEqual({ caFile: '/run/ferry-nats-tls/ca.crt' });
    }
    // A password given in values is used as is.
    expect(JSON.parse(secret.stringData['nats-credentials-cli.json']).password).toBe('operator-chosen-password-1');
    for (const pod of [find(objects, 'DaemonSet', 'rel-ferry-agent').spec.template.spec, find(objects, 'Deployment', 'rel-ferry-coordinator').spec.template.spec]) {
      expect(pod.volumes.find((v: JsonDoc) => v.name === 'nats-tls-ca').secret).toEqual({ secretName: 'ferry-nats-tls', defaultMode: 0o444, items: [{ key: 'ca.crt', path: 'ca.crt' }] });
      expect(pod.containers[0].volumeMounts.find((m: JsonDoc) => m.name === 'nats-tls-ca').mountPath).toBe('/run/ferry-nats-tls');
    }
  });

  test("the rendered nats.conf and credentials files on a real nats-server: each principal gets only its subjects", async () => {
    const nats = await startRenderedNats(await render());
    try {
      // Plain TCP is refused outright; TLS without a user or with a wrong password too.
      expect(await nats.tryConnect({ tls: undefined })).not.toBe('connected');
      expect(await nats.tryConnect({})).toBe('AUTHORIZATION_VIOLATION');
      expect(await nats.tryConnect({ user: 'cli', pass: 'not-the-password-at-all' })).toBe('AUTHORIZATION_VIOLATION');
      const [coordinator, agent, cli] = await Promise.all(['coordinator', 'agent', 'cli'].map((p) => nats.connectAs(p)));
      // The coordinator hears heartbeats of any host; an agent may send them, the CLI may not.
      const heard: string[] = [];
      coordinator.subscribe('ferry.v1.coord.heartbeat.*', { callback: (_e, m) => heard.push(m.subject) });
      await coordinator.flush();
      expect(await nats.publishError(agent, 'ferry.v1.coord.heartbeat.node-1')).toBeNull();
      expect(await nats.publishError(cli, 'ferry.v1.coord.heartbeat.node-1')).toBe('PERMISSIONS_VIOLATION');
      expect(await nats.publishError(cli, 'ferry.v1.agent.node-1.ps')).toBe('PERMISSIONS_VIOLATION');
      expect(await nats.publishError(agent, 'ferry.v1.coord.migrate')).toBe('PERMISSIONS_VIOLATION');
      expect(await nats.publishError(agent, 'ferry.v1.agent.node-2.stop')).toBe('PERMISSIONS_VIOLATION');
      await coordinator.flush();
      expect(heard).toEqual(['ferry.v1.coord.heartbeat.node-1']);
      // Request/reply works for each principal on its own inbox: the CLI asks the coordinator, the coordinator an agent.
      coordinator.subscribe('ferry.v1.coord.hosts', { callback: (_e, m) => m.respond(new TextEncoder().encode('hosts')) });
      agent.subscribe('ferry.v1.agent.node-1.ps', { callback: (_e, m) => m.respond(new TextEncoder().encode('ps')) });
      await Promise.all([coordinator.flush(), agent.flush()]);
      expect(new TextDecoder().decode((await cli.request('ferry.v1.coord.hosts', new Uint8Array(), { timeout: 3_000 })).data)).toBe('hosts');
      expect(new TextDecoder().decode((await coordinator.request('ferry.v1.agent.node-1.ps', new Uint8Array(), { timeout: 3_000 })).data)).toBe('ps');
    } finally {
      await nats.stop();
    }
  });
});
