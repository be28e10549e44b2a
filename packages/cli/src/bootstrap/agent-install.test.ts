import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentInstallLayout, renderAgentEnv, renderAgentUnit, renderSupervisorScript, statusScript, stopScript } from './agent-install';
import { parseRemoteFacts, remoteProblems } from './remote-checks';
import { parseSshTarget, shellQuote } from './ssh-session';

const layout = agentInstallLayout('/opt/ferry', '/etc/ferry');

test('the env file round-trips through sh, quoting included', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-env-'));
  try {
    const env = renderAgentEnv({
      host: 'node-a', address: '10.0.0.5', natsUrl: 'nats://u:p$w"d`x@n:4222', dataDir: '/var/lib/ferry', workDir: '/run/ferry/work',
      logLevel: 'info', extraEnv: { FERRY_GHOST_LIMIT_BYTES: '1048576' },
    });
    writeFileSync(join(dir, 'agent.env'), env);
    const out = execFileSync('/bin/sh', ['-c', `set -a; . ${shellQuote(join(dir, 'agent.env'))}; printf '%s|%s|%s' "$FERRY_HOST" "$FERRY_NATS_URL" "$FERRY_GHOST_LIMIT_BYTES"`], { encoding: 'utf8' });
    expect(out).toBe('node-a|nats://u:p$w"d`x@n:4222|1048576');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the systemd unit leaves workloads alone and restarts on failure', () => {
  const unit = renderAgentUnit(layout, '/usr/bin/node');
  expect(unit).toContain('KillMode=process');
  expect(unit).toContain('Restart=on-failure');
  expect(unit).toContain('EnvironmentFile=/etc/ferry/agent.env');
  expect(unit).toContain('ExecStart=/usr/bin/node /opt/ferry/node_modules/@ferry/agent/dist/main.js');
});

test('generated shell scripts parse', () => {
  for (const script of [renderSupervisorScript(layout, '/usr/bin/node'), statusScript(layout, 'process'), stopScript(layout, 'process')]) {
    expect(() => execFileSync('/bin/sh', ['-n', '-c', script])).not.toThrow();
  }
});

test('remote facts: a good host passes, a bad one lists every problem', () => {
  const good = parseRemoteFacts('os=Linux\nkernel=6.1.0\nuid=0\ncriu_path=/usr/sbin/criu\ncriu_version=4.1.1\nnode_path=/usr/bin/node\nnode_version=v20.19.0\ntar=yes\n');
  expect(remoteProblems(good)).toEqual([]);
  expect(good.hasSystemd).toBe(false);
  const bad = parseRemoteFacts('os=Linux\nkernel=6.1.0\nuid=1000\ncriu_path=/usr/sbin/criu\ncriu_version=3.17.1\nnode_path=/usr/bin/node\nnode_version=v18.19.0\n');
  const problems = remoteProblems(bad);
  expect(problems).toHaveLength(4);
  expect(problems.join('\n')).toMatch(/not root[\s\S]*criu 3.17.1 is too old[\s\S]*node v18.19.0 is too old[\s\S]*tar is not installed/);
});

test('--ssh targets', () => {
  expect(parseSshTarget('root@10.0.0.5')).toEqual({ user: 'root', host: '10.0.0.5', port: 22 });
  expect(parseSshTarget('root@[::1]:2222')).toEqual({ user: 'root', host: '::1', port: 2222 });
  expect(() => parseSshTarget('10.0.0.5')).toThrow(/USER@ADDR/);
  expect(() => parseSshTarget('root@h:70000')).toThrow(/USER@ADDR/);
});
