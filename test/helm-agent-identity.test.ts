/**
 * One NATS identity per node in the Helm chart (`nats.auth.agentNodes`): each listed node's agent
 * gets its own user, its own credentials in its own DaemonSet pinned to that node, and nats-server
 * (run from the rendered config) lets it speak for its own host only. The attacks of issue #16
 * item 9: one node's credentials registering, heartbeating or taking commands as another host.
 */
import { existsSync } from 'node:fs';
import type { JsonDoc } from './helpers/json-doc';
import { CHART, find, HELM, helm, render, startRenderedNats, type K8sObject } from './helpers/helm';

// A real nats-server starts in the last test: on a loaded machine (the end of a full run) that took over the default 5 s.
jest.setTimeout(30_000);

const NODES = ['node-a', 'node-b'];

beforeAll(() => {
  if (!existsSync(HELM)) throw new Error(`${HELM} is missing: run \`bash scripts/setup.sh\` (it builds helm)`);
});

async function renderPerNode(): Promise<K8sObject[]> {
  return render([], ['--set', `nats.auth.agentNodes={${NODES.join(',')}}`]);
}

test('one DaemonSet per listed node, pinned to it, holding only its own credentials; no shared agent user', async () => {
  const objects = await renderPerNode();
  const daemonSets = objects.filter((o) => o.kind === 'DaemonSet');
  expect(daemonSets.map((d) => d.metadata.name).sort()).toEqual(['rel-ferry-agent-node-a', 'rel-ferry-agent-node-b']);
  for (const node of NODES) {
    const ds = find(objects, 'DaemonSet', `rel-ferry-agent-${node}`);
    const pod = ds.spec.template.spec;
    expect(pod.nodeSelector).toMatchObject({ 'kubernetes.io/hostname': node, 'kubernetes.io/os': 'linux' });
    // Distinct selectors: two DaemonSets never fight over one pod.
    expect(ds.spec.selector.matchLabels['ferry.dev/node']).toBe(node);
    expect(ds.spec.template.metadata.labels['ferry.dev/node']).toBe(node);
    const credentials = pod.volumes.find((v: JsonDoc) => v.name === 'nats-credentials').secret;
    expect(credentials.items).toEqual([{ key: `nats-credentials-agent-${node}.json`, path: 'credentials.json' }]);
  }
  const secret = find(objects, 'Secret', 'rel-ferry-credentials').stringData;
  expect(secret['nats-agent-password']).toBeUndefined();
  expect(secret['nats-credentials-agent.json']).toBeUndefined();
  const [a, b] = NODES.map((n) => JSON.parse(secret[`nats-credentials-agent-${n}.json`]));
  expect(a).toMatchObject({ user: 'agent-node-a', inboxPrefix: '_INBOX_agent-node-a' });
  expect(b).toMatchObject({ user: 'agent-node-b', inboxPrefix: '_INBOX_agent-node-b' });
  expect(a.password).not.toBe(b.password);
  const conf = find(objects, 'ConfigMap', 'rel-ferry-nats').data['nats.conf'];
  expect(conf).not.toMatch(/user: "agent",/);
  // Without the list, the one shared DaemonSet and user are as before.
  const shared = await render();
  expect(shared.filter((o) => o.kind === 'DaemonSet').map((d) => d.metadata.name)).toEqual(['rel-ferry-agent']);
  expect(find(shared, 'ConfigMap', 'rel-ferry-nats').data['nats.conf']).toMatch(/user: "agent",/);
});

test('names that are not ferry host names are refused by the schema', async () => {
  for (const bad of ['Node-A', 'node.example.com', '-x', 'a'.repeat(64)]) {
    const r = await helm(['template', 'rel', CHART, '--set', `nats.auth.agentNodes={${bad}}`]);
    expect({ bad, code: r.code }).toEqual({ bad, code: 1 });
  }
});

test("on a real nats-server, node-a's credentials register, heartbeat and take commands as node-a only", async () => {
  const nats = await startRenderedNats(await renderPerNode());
  try {
    // The shared user of the default chart does not exist here.
    expect(await nats.tryConnect({ user: 'agent', pass: 'x'.repeat(32) })).toBe('AUTHORIZATION_VIOLATION');
    const [coordinator, nodeA] = await Promise.all([nats.connectAs('coordinator'), nats.connectAs('agent-node-a')]);
    const heard: string[] = [];
    coordinator.subscribe('ferry.v1.coord.>', { callback: (_e, m) => heard.push(m.subject) });
    await coordinator.flush();
    // Its own host: allowed.
    expect(await nats.publishError(nodeA, 'ferry.v1.coord.heartbeat.node-a')).toBeNull();
    expect(await nats.publishError(nodeA, 'ferry.v1.coord.register.node-a')).toBeNull();
    // Another host, or one nobody listed: refused by nats-server itself, never reaching the coordinator.
    expect(await nats.publishError(nodeA, 'ferry.v1.coord.heartbeat.node-b')).toBe('PERMISSIONS_VIOLATION');
    expect(await nats.publishError(nodeA, 'ferry.v1.coord.register.node-b')).toBe('PERMISSIONS_VIOLATION');
    expect(await nats.publishError(nodeA, 'ferry.v1.coord.register.evil-host')).toBe('PERMISSIONS_VIOLATION');
    // Another agent's commands and replies: not readable.
    expect(await nats.subscribeError(nodeA, 'ferry.v1.agent.node-b.>')).toBe('PERMISSIONS_VIOLATION');
    expect(await nats.subscribeError(nodeA, '_INBOX_agent-node-b.>')).toBe('PERMISSIONS_VIOLATION');
    await coordinator.flush();
    expect(heard.sort()).toEqual(['ferry.v1.coord.heartbeat.node-a', 'ferry.v1.coord.register.node-a']);
    // Its own commands arrive, and it answers them.
    nodeA.subscribe('ferry.v1.agent.node-a.ps', { callback: (_e, m) => m.respond(new TextEncoder().encode('ps-a')) });
    await nodeA.flush();
    expect(new TextDecoder().decode((await coordinator.request('ferry.v1.agent.node-a.ps', new Uint8Array(), { timeout: 3_000 })).data)).toBe('ps-a');
  } finally {
    await nats.stop();
  }
});
