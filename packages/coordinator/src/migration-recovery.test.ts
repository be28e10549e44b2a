import { AgentVerb, ErrorCode, FerryError, silentLogger, type MigrationStep } from '@ferry/protocol';
import { recoverMigration, type RecoveryDeps } from './migration-recovery';
import type { MigrationRecord } from './migration-store';

function record(steps: MigrationStep[]): MigrationRecord {
  return {
    id: 'm-1', workload: 'web', from: 'h1', to: 'h2', state: 'running', step: steps[steps.length - 1]!,
    requestedAt: new Date().toISOString(), finishedAt: null, downtimeMs: 0, totalMs: 0, bytesTransferred: 0,
    transport: 'nats', phases: { dumpMs: 0, transferMs: 0, restoreMs: 0 }, pid: null, error: null,
    history: steps.map((step) => ({ step, at: new Date().toISOString() })), transferId: 'x-1', requestId: null, frozenAt: null,
  } as MigrationRecord;
}

/** Fake agents: answers per "host.verb", records every call in order. */
function deps(m: MigrationRecord, answers: Record<string, unknown | Error>) {
  const calls: string[] = [];
  const d: RecoveryDeps = {
    ask: async (host, verb) => {
      calls.push(`${host}.${verb}`);
      const a = answers[`${host}.${verb}`];
      if (a instanceof Error) throw a;
      return (a ?? {}) as never;
    },
    step: async (step, state) => {
      if (state) m.state = state;
      m.step = step;
      m.history.push({ step, at: new Date().toISOString() });
    },
    timeoutMs: 1_000,
    log: silentLogger,
  };
  return { d, calls };
}
const record_ = (over: object) => ({ role: null, workloadState: null, alive: false, pid: null, inProgress: null, ...over });
const unavailable = () => new FerryError(ErrorCode.UNAVAILABLE, 'no one answers');

describe('recoverMigration', () => {
  it('before a restore was asked for: rolls back (target discards, source resumes)', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing']);
    const { d, calls } = deps(m, {});
    expect(await recoverMigration(m, d)).toBe(true);
    expect(calls).toEqual([`h2.${AgentVerb.DISCARD}`, `h1.${AgentVerb.RESUME}`]);
    expect(m.state).toBe('rolled-back');
    expect(m.error?.message).toMatch(/restarted during checkpointing/);
  });

  it('before the freeze: discards only, never resumes', async () => {
    const m = record(['requested', 'preflight', 'receiving']);
    const { d, calls } = deps(m, { [`h2.${AgentVerb.DISCARD}`]: unavailable() });
    expect(await recoverMigration(m, d)).toBe(true);
    expect(calls).toEqual([`h2.${AgentVerb.DISCARD}`]);
    expect(m.state).toBe('rolled-back');
  });

  it('restore asked for and the target runs the restored copy: goes forward', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing', 'restoring']);
    const { d, calls } = deps(m, { [`h2.${AgentVerb.MIGRATION_RECORD}`]: record_({ role: 'target', alive: true, pid: 42, workloadState: 'running' }) });
    expect(await recoverMigration(m, d)).toBe(true);
    expect(calls).toEqual([`h2.${AgentVerb.MIGRATION_RECORD}`, `h1.${AgentVerb.RELEASE}`, `h2.${AgentVerb.SETTLE}`]);
    expect(m).toMatchObject({ state: 'succeeded', step: 'done', pid: 42 });
  });

  it('restore asked for but the target has no copy: rolls back', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing', 'restoring']);
    const { d, calls } = deps(m, { [`h2.${AgentVerb.MIGRATION_RECORD}`]: record_({}) });
    expect(await recoverMigration(m, d)).toBe(true);
    expect(calls).toEqual([`h2.${AgentVerb.MIGRATION_RECORD}`, `h2.${AgentVerb.DISCARD}`, `h1.${AgentVerb.RESUME}`]);
    expect(m.state).toBe('rolled-back');
  });

  it('restore asked for and the target is silent or still restoring: decides nothing, touches nothing', async () => {
    for (const answer of [unavailable(), record_({ inProgress: 'restoring' })]) {
      const m = record(['requested', 'preflight', 'receiving', 'checkpointing', 'restoring']);
      const { d, calls } = deps(m, { [`h2.${AgentVerb.MIGRATION_RECORD}`]: answer });
      expect(await recoverMigration(m, d)).toBe(false);
      expect(calls).toEqual([`h2.${AgentVerb.MIGRATION_RECORD}`]);
      expect(m.state).toBe('running');
    }
  });

  it('a rollback after a restore request whose discard is not confirmed keeps the source frozen', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing', 'restoring', 'rolling-back']);
    const { d, calls } = deps(m, { [`h2.${AgentVerb.MIGRATION_RECORD}`]: record_({}), [`h2.${AgentVerb.DISCARD}`]: unavailable() });
    expect(await recoverMigration(m, d)).toBe(false);
    expect(calls).not.toContain(`h1.${AgentVerb.RESUME}`);
  });

  it('releasing reached: releases again and settles, even if the source is gone', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing', 'restoring', 'releasing']);
    const { d, calls } = deps(m, { [`h1.${AgentVerb.RELEASE}`]: unavailable() });
    expect(await recoverMigration(m, d)).toBe(true);
    expect(calls).toEqual([`h1.${AgentVerb.RELEASE}`, `h2.${AgentVerb.SETTLE}`]);
    expect(m.state).toBe('succeeded');
  });

  it('a source whose frozen copy died meanwhile: failed, said why', async () => {
    const m = record(['requested', 'preflight', 'receiving', 'checkpointing']);
    const { d } = deps(m, { [`h1.${AgentVerb.RESUME}`]: new FerryError(ErrorCode.FAILED_PRECONDITION, 'workload web died while frozen') });
    expect(await recoverMigration(m, d)).toBe(true);
    expect(m.state).toBe('failed');
    expect(m.error?.message).toMatch(/died while frozen/);
  });
});
