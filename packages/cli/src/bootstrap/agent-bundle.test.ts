import { join } from 'node:path';
import { agentBundleEntries } from './agent-bundle';

test('the bundle holds the agent, its workspace packages (dist + native addon) and their runtime dependencies only', () => {
  const repo = join(__dirname, '..', '..', '..', '..');
  const targets = agentBundleEntries(repo).map((e) => e.target);
  for (const t of [
    'node_modules/@ferry/agent/dist',
    'node_modules/@ferry/protocol/dist',
    'node_modules/@ferry/transfer/dist',
    'node_modules/@ferry/native/build/Release/ferry_native.node',
    'node_modules/nats',
    'node_modules/pino',
    'node_modules/zod',
    'node_modules/msgpackr',
  ]) {
    expect(targets).toContain(t);
  }
  // Nothing of the coordinator, CLI or dev tooling.
  for (const t of targets) expect(t).not.toMatch(/@ferry\/(coordinator|cli)|ioredis|typescript|jest|commander|ssh2/);
});
