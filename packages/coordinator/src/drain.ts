/**
 * Drain: cordon a host, then migrate every workload off it with placement, keeping at most
 * `maxMigrationsPerSource` leaving it and `maxMigrationsPerTarget` entering any one host at once.
 * Each result is published on `events.drain` as it completes, then a summary.
 */
import {
  ErrorCode,
  FerryError,
  PROTOCOL_VERSION,
  isFailedPrecondition,
  toFerryError,
  type DrainEvent,
  type DrainSummary,
  type Logger,
  type MigrationResult,
} from '@ferry/protocol';
import type { HostRegistry } from './host-registry';
import type { MigrateParams, MigrationRunner } from './migration-runner';
import { placeWorkload } from './placement';

/** How long a drain waiting for a free slot sleeps at most before looking at the hosts again. */
const SLOT_RECHECK_MS = 500;
/** A workload whose migration failed its pre-flight on one target is tried on another this many times. */
const MAX_ATTEMPTS_PER_WORKLOAD = 2;

export interface DrainLimits {
  maxMigrationsPerSource: number;
  maxMigrationsPerTarget: number;
}

export interface DrainDeps {
  registry: HostRegistry;
  runner: MigrationRunner;
  limits: DrainLimits;
  publish(event: DrainEvent): void;
  log: Logger;
}

/** The workloads a drain of `host` will move, in the order it starts them (largest first, while memory is freest). */
export function drainPlan(registry: HostRegistry, host: string): string[] {
  return registry
    .workloadsOn(host)
    .sort((a, b) => b.rssBytes - a.rssBytes || a.name.localeCompare(b.name))
    .map((w) => w.name);
}

/** Runs a drain to its end (the host must already be cordoned); never throws, every outcome is an event. */
export async function runDrain(
  host: string,
  drainId: string,
  workloads: string[],
  deps: DrainDeps,
  how: Pick<MigrateParams, 'transport' | 'restore'> = {},
): Promise<DrainSummary> {
  const started = Date.now();
  const { runner, limits, log } = deps;
  const pending = workloads.map((name) => ({ name, exclude: new Set<string>(), attempts: 0 }));
  const running = new Set<Promise<void>>();
  const summary: DrainSummary = { host, total: workloads.length, succeeded: 0, failed: 0, unplaced: 0, totalMs: 0 };
  const unplaced = (workload: string, err: unknown) => {
    summary.unplaced++;
    deps.publish({ v: PROTOCOL_VERSION, drainId, kind: 'unplaced', workload, error: toFerryError(err).toBody() });
  };

  while (pending.length > 0 || running.size > 0) {
    let startedOne = false;
    for (let i = 0; i < pending.length && runner.slots.outgoing(host) < limits.maxMigrationsPerSource; ) {
      const item = pending[i]!;
      // Two hosts report it running: never move either (one is an impostor; drain.test.ts).
      const ambiguous = deps.registry.ambiguousWorkload(item.name);
      if (ambiguous) {
        pending.splice(i, 1);
        unplaced(item.name, ambiguous);
        continue;
      }
      const w = deps.registry.findWorkload(item.name);
      if (!w || w.state === 'exited' || w.host !== host) {
        // Gone or moved meanwhile (stopped by an operator, migrated by someone else): nothing to do.
        pending.splice(i, 1);
        summary.total--;
        continue;
      }
      try {
        runner.place(item.name, item.exclude);
      } catch (err) {
        if (isFailedPrecondition(err) && fitsIgnoringLimits(deps, w, item.exclude)) {
          i++; // every fitting target is at its incoming limit: wait for a slot
          continue;
        }
        pending.splice(i, 1);
        unplaced(item.name, err);
        continue;
      }
      pending.splice(i, 1);
      item.attempts++;
      startedOne = true;
      const p: Promise<void> = runner
        .migrate({ workload: item.name, exclude: item.exclude, ...how })
        .then((m: MigrationResult) => {
          // A pre-flight refusal (e.g. an incompatible CPU) changed nothing: try another host.
          if (m.state === 'rolled-back' && m.error?.code === ErrorCode.FAILED_PRECONDITION && item.attempts < MAX_ATTEMPTS_PER_WORKLOAD) {
            item.exclude.add(m.to);
            pending.push(item);
          }
          if (m.state === 'succeeded') summary.succeeded++;
          else summary.failed++;
          deps.publish({ v: PROTOCOL_VERSION, drainId, kind: 'result', migration: m });
        })
        .catch((err: unknown) => unplaced(item.name, err))
        .finally(() => running.delete(p));
      running.add(p);
    }
    if (pending.length === 0 && running.size === 0) break;
    if (!startedOne || runner.slots.outgoing(host) >= limits.maxMigrationsPerSource) {
      await Promise.race([...running, runner.slots.changed(SLOT_RECHECK_MS)]);
    }
  }
  summary.totalMs = Date.now() - started;
  log.info({ drainId, ...summary }, 'drain finished');
  deps.publish({ v: PROTOCOL_VERSION, drainId, kind: 'done', summary });
  return summary;
}

/** True when some host could take `w` if no migrations were in flight (so waiting helps). */
function fitsIgnoringLimits(deps: DrainDeps, w: { name: string; host: string; rssBytes: number }, exclude: ReadonlySet<string>): boolean {
  const view = deps.registry.placementView(deps.runner.slots).map((h) => ({ ...h, incoming: 0, incomingBytes: 0 }));
  try {
    placeWorkload(w, view, { maxIncomingPerHost: Number.POSITIVE_INFINITY, exclude });
    return true;
  } catch {
    return false;
  }
}

/** Checks a drain may start on `host`. */
export function assertDrainable(registry: HostRegistry, host: string): void {
  registry.require(host);
  if (!registry.isAlive(host)) throw new FerryError(ErrorCode.UNAVAILABLE, `host ${host} is lost (no heartbeat); its workloads cannot be checkpointed`);
}
