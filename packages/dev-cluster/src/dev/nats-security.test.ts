import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNatsCredentials } from '@ferry/protocol';
import { devNatsPrincipals, natsAuthorizationConfig, writeDevCredentials } from './nats-security';

const fixedPassword = () => 'p'.repeat(32);

test('each agent may take commands only on its own subjects and reply only under its own inbox', () => {
  const p = devNatsPrincipals(['h1', 'h2'], null, fixedPassword);
  expect(p['agent-h1'].subscribe.allow).toEqual(['ferry.v1.agent.h1.>', 'ferry.v1.xfer.>', '_INBOX_h1.>']);
  expect(p['agent-h1'].publish.allow).not.toContain('ferry.v1.agent.h2.>');
  expect(p['agent-h1'].publish.allow.some((s) => s.startsWith('ferry.v1.agent.'))).toBe(false);
  expect(p['agent-h1'].credentials.inboxPrefix).toBe('_INBOX_h1');
  expect(p.cli.publish.deny).toEqual(['ferry.v1.coord.heartbeat.>', 'ferry.v1.coord.register.>']);
  // Registration and heartbeats for its own host only.
  expect(p['agent-h1'].publish.allow).toEqual(expect.arrayContaining(['ferry.v1.coord.register.h1', 'ferry.v1.coord.heartbeat.h1']));
  expect(p['agent-h1'].publish.allow.filter((s) => s.startsWith('ferry.v1.coord.'))).toEqual(['ferry.v1.coord.register.h1', 'ferry.v1.coord.heartbeat.h1']);
  expect(p.cli.subscribe.allow).toEqual(['ferry.v1.events.>', '_INBOX_cli.>']);
  expect(p.coordinator.subscribe.allow).toContain('_INBOX.>');
});

test('the authorization block names every user once, with response permissions outliving a long checkpoint', () => {
  const conf = natsAuthorizationConfig(devNatsPrincipals(['h1'], null, fixedPassword));
  for (const user of ['coordinator', 'cli', 'admin', 'agent-h1']) expect(conf).toContain(`{ user: "${user}"`);
  expect(conf).toContain('allow_responses: { max: 1, expires: "1h" }');
  expect(conf).toContain('deny: ["ferry.v1.coord.heartbeat.>", "ferry.v1.coord.register.>"]');
});

test('credentials files are 0600 in a 0700 directory, readable by loadNatsCredentials, and a group-readable one is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-creds-'));
  try {
    const files = writeDevCredentials(dir, devNatsPrincipals(['h1'], '/x/ca.pem'));
    expect(statSync(files.agents.h1).mode & 0o777).toBe(0o600);
    expect(statSync(join(files.cli, '..')).mode & 0o777).toBe(0o700);
    const c = loadNatsCredentials(files.agents.h1);
    expect(c).toMatchObject({ user: 'agent-h1', inboxPrefix: '_INBOX_h1', tls: { caFile: '/x/ca.pem' } });
    expect(c.password).toHaveLength(32);
    // Passwords are fresh per principal.
    expect(JSON.parse(readFileSync(files.cli, 'utf8')).password).not.toBe(c.password);
    require('node:fs').chmodSync(files.cli, 0o640);
    expect(() => loadNatsCredentials(files.cli)).toThrow(/must not be readable by group or others/);
    require('node:fs').writeFileSync(files.admin, '{"v":1,"user":"a"', { mode: 0o600 });
    expect(() => loadNatsCredentials(files.admin)).toThrow(/not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
