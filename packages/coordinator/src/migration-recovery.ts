/**
 * What a coordinator does with a migration it finds in flight in Redis after a restart (or a
 * leader change). The rules keep "the workload runs exactly once":
 *  - no restore was requested yet: roll back (target discards, source thaws its frozen copy);
 *  - a restore was requested but not confirmed: ask the target's own record. A restored copy
 *    that runs there means forward (source releases, target settles); none means roll back;
 *    a restore still running there, or no answer, means "not yet" (retry later, source stays frozen);
 *  - releasing was reached: release again (idempotent on the agent) and settle.
 */
import {
  AgentVerb,
  ErrorCode,
  isFailedPrecondition,
  toFerryError,
  type AgentReply,
  type AgentRequestBody,
  type Logger,
  type MigrationRecordReply,
  type MigrationState,
  type MigrationStep,
} from '@ferry/protocol';
import type { MigrationRecord } from './migration-store';

/** The migration as recovery names it to an agent (release, resume, discard, settle, migration-record). */
type MigrationRefBody = AgentRequestBody<typeof AgentVerb.RELEASE>;

export interface RecoveryDeps {
  /** Asks agent `host` for `verb`; the reply is checked against the protocol's verb table. */
  ask<V extends AgentVerb>(host: string, verb: V, body: AgentRequestBody<V>, timeoutMs: number): Promise<AgentReply<V>>;
  /** Persists a step (and state) before it is carried out. */
  step(step: MigrationStep, state?: MigrationState): Promise<void>;
  timeoutMs: number;
  log: Logger;
}

/** Returns true when the migration reached a final state (set on `m`), false to retry later. */
export async function recoverMigration(m: MigrationRecord, deps: RecoveryDeps): Promise<boolean> {
  const reached = new Set(m.history.map((h) => h.step));
  const ref = { migrationId: m.id, workload: m.workload };
  if (reached.has('releasing') || reached.has('done')) return goForward(m, deps, reached);
  if (reached.has('restoring')) {
    let record: MigrationRecordReply;
    try {
      record = await deps.ask(m.to, AgentVerb.MIGRATION_RECORD, ref, deps.timeoutMs);
    } catch (err) {
      deps.log.warn({ err: toFerryError(err).message }, 'target does not answer; the source stays frozen until it does');
      return false;
    }
    if (record.inProgress === 'restoring') return false;
    if (record.role === 'target' && record.alive && record.pid) {
      m.pid = record.pid;
      return goForward(m, deps, reached);
    }
  }
  return rollBack(m, deps, reached, ref);
}

async function goForward(m: MigrationRecord, deps: RecoveryDeps, reached: Set<MigrationStep>): Promise<boolean> {
  const ref = { migrationId: m.id, workload: m.workload };
  if (!reached.has('releasing')) await deps.step('releasing');
  try {
    await deps.ask(m.from, AgentVerb.RELEASE, ref, deps.timeoutMs);
  } catch (err) {
    // As in a live run: the frozen copy stays frozen (never thawed) and is released later.
    deps.log.error({ err: toFerryError(err).message }, 'source did not release its frozen copy');
  }
  await deps.ask(m.to, AgentVerb.SETTLE, ref, deps.timeoutMs).catch((err) =>
    deps.log.warn({ err: toFerryError(err).message }, 'target did not settle'),
  );
  m.state = 'succeeded';
  await deps.step('done');
  deps.log.info('in-flight migration finished forward after a coordinator restart');
  return true;
}

async function rollBack(m: MigrationRecord, deps: RecoveryDeps, reached: Set<MigrationStep>, ref: MigrationRefBody): Promise<boolean> {
  const interrupted = [...reached].filter((s) => s !== 'rolling-back').pop() ?? m.step;
  if (!reached.has('rolling-back')) await deps.step('rolling-back');
  try {
    await deps.ask(m.to, AgentVerb.DISCARD, ref, deps.timeoutMs);
  } catch (err) {
    if (reached.has('restoring')) {
      deps.log.warn({ err: toFerryError(err).message }, 'target did not confirm its discard; retrying later');
      return false;
    }
    deps.log.warn({ err: toFerryError(err).message }, 'target did not discard (it holds no restored copy)');
  }
  if (reached.has('checkpointing')) {
    try {
      await deps.ask(m.from, AgentVerb.RESUME, ref, deps.timeoutMs);
    } catch (err) {
      if (!isFailedPrecondition(err)) {
        deps.log.warn({ err: toFerryError(err).message }, 'source did not thaw; retrying later');
        return false;
      }
      m.state = 'failed';
      m.error = { code: ErrorCode.FAILED_PRECONDITION, message: `the coordinator restarted during ${interrupted}; ${toFerryError(err).message}` };
      return true;
    }
  }
  m.state = 'rolled-back';
  m.error = m.error ?? { code: ErrorCode.UNAVAILABLE, message: `the coordinator restarted during ${interrupted}; rolled back` };
  deps.log.warn('in-flight migration rolled back after a coordinator restart');
  return true;
}
