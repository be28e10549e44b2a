import {
  AgentVerb,
  CoordVerb,
  ErrorCode,
  FerryError,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_LOCAL_FILE_PATH_BYTES,
  MAX_LOCAL_FILES,
  MAX_ROOT_DIRS,
  PROTOCOL_VERSION,
  agentVerbs,
  encode,
  coordVerbs,
  parseMessage,
  registerVerb,
  type VerbShape,
} from './index';

const criu = { version: '4.1.1', usable: true, checkOk: true, needsFaultInjection: false, dumpRestoreOk: true };
const memory = { totalBytes: 8 << 30, availableBytes: 4 << 30 };
const workload = { name: 'web', host: 'h1', state: 'running', pid: 42, rssBytes: 1 << 20, argv: ['/bin/sh'], startedAt: '2026-12-02T00:00:00Z' };
const host = { name: 'h1', state: 'alive', cordoned: false, address: '10.0.0.1', criu, memory, workloadCount: 1, lastHeartbeatAt: '2026-12-02T00:00:00Z' };
const migration = {
  id: 'm-1', workload: 'web', from: 'h1', to: 'h2', state: 'succeeded', step: 'done', requestedAt: '2026-12-02T00:00:00Z',
  finishedAt: '2026-12-02T00:00:01Z', downtimeMs: 10, totalMs: 1000, bytesTransferred: 1 << 20, transport: 'nats',
  phases: { dumpMs: 1, transferMs: 2, restoreMs: 3 }, pid: 43, error: null, history: [{ step: 'done', at: '2026-12-02T00:00:01Z' }],
};
const event = { type: 'host', step: 'joined', at: '2026-12-02T00:00:00Z', key: 'h1', host: 'h1', figures: {} };

/** A reply each verb's handler could send: every field its schema requires, and no more. */
const agentReplies: Record<AgentVerb, Record<string, unknown>> = {
  [AgentVerb.PROBE]: { criu, memory },
  [AgentVerb.RUN]: { workload },
  [AgentVerb.PS]: { workloads: [workload] },
  [AgentVerb.STOP]: {},
  [AgentVerb.RECEIVE]: {},
  [AgentVerb.CHECKPOINT]: { dumpMs: 1, transferMs: 2, bytes: 3, files: 4, frozenAt: 5 },
  [AgentVerb.RESTORE]: { pid: 43, restoreMs: 3, resumedAt: 6 },
  [AgentVerb.RELEASE]: {},
  [AgentVerb.RESUME]: {},
  [AgentVerb.DISCARD]: {},
  [AgentVerb.SETTLE]: {},
  [AgentVerb.CPUINFO]: { image: Buffer.from([1, 2, 3]) },
  [AgentVerb.CPUINFO_CHECK]: { compatible: true },
  [AgentVerb.MIGRATION_RECORD]: { role: 'target', workloadState: 'running', alive: true, pid: 43, inProgress: null },
  [AgentVerb.MIGRATABLE]: { localFiles: [{ path: '/srv/data/x', size: 5, mtimeMs: 1796248602187.5, sha256: 'a'.repeat(64) }] },
  [AgentVerb.CHECK_FILES]: { missing: ['/srv/data/x'], different: [{ path: '/srv/y', why: 'sha256' }] },
};
const coordReplies: Record<CoordVerb, Record<string, unknown>> = {
  [CoordVerb.HOSTS]: { hosts: [host] },
  [CoordVerb.PS]: { workloads: [workload] },
  [CoordVerb.RUN]: { workload },
  [CoordVerb.STOP]: {},
  [CoordVerb.MIGRATE]: { migration },
  [CoordVerb.STATUS]: { migrations: [migration] },
  [CoordVerb.CORDON]: { host },
  [CoordVerb.UNCORDON]: { host },
  [CoordVerb.DRAIN]: { drainId: 'd-1', workloads: ['web'] },
  [CoordVerb.EVENTS]: { events: [event] },
};

const table: Array<[string, VerbShape, Record<string, unknown>]> = [
  ...Object.values(AgentVerb).map((v): [string, VerbShape, Record<string, unknown>] => [`agent ${v}`, agentVerbs[v], agentReplies[v]]),
  ...Object.values(CoordVerb).map((v): [string, VerbShape, Record<string, unknown>] => [`coord ${v}`, coordVerbs[v], coordReplies[v]]),
  ['register', registerVerb, { heartbeatIntervalMs: 1000 }],
];

function refusal(schema: VerbShape['reply'], value: unknown): FerryError {
  try {
    parseMessage(schema, value);
  } catch (err) {
    return err as FerryError;
  }
  throw new Error('accepted');
}

describe('verb table', () => {
  test('every agent verb and every coordinator verb has exactly one entry', () => {
    expect(Object.keys(agentVerbs).sort()).toEqual(Object.values(AgentVerb).sort());
    expect(Object.keys(coordVerbs).sort()).toEqual(Object.values(CoordVerb).sort());
  });

  test.each(table)('%s: its request carries the protocol version', (_name, shape) => {
    expect(refusal(shape.request, {}).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refusal(shape.request, { v: PROTOCOL_VERSION + 1 }).code).toBe(ErrorCode.FAILED_PRECONDITION);
  });

  test.each(table)('%s: a reply its handler could send is accepted', (_name, shape, reply) => {
    expect(() => parseMessage(shape.reply, reply)).not.toThrow();
  });

  test.each(table.filter(([, , reply]) => Object.keys(reply).length > 0))('%s: a reply missing any of its fields is refused', (_name, shape, reply) => {
    for (const field of Object.keys(reply)) {
      const { [field]: _gone, ...rest } = reply;
      expect(refusal(shape.reply, rest).code).toBe(ErrorCode.INVALID_ARGUMENT);
    }
  });

  test('a field missing deeper in a reply is refused too', () => {
    const { pid: _pid, ...noPid } = workload;
    expect(refusal(agentVerbs[AgentVerb.PS].reply, { workloads: [noPid] }).message).toMatch(/workloads\.0\.pid/);
    expect(refusal(coordVerbs[CoordVerb.HOSTS].reply, { hosts: [{ ...host, criu: undefined }] }).message).toMatch(/hosts\.0\.criu/);
  });

  test('an empty reply drops what it does not declare', () => {
    expect(parseMessage(agentVerbs[AgentVerb.STOP].reply, { stray: 1 })).toEqual({});
  });

  test('local file identities are bounded: 4096 files, 256 KiB of paths, a 64-hex-digit sha256; the largest list fits a control message', () => {
    const reply = agentVerbs[AgentVerb.MIGRATABLE].reply;
    const file = (i: number, pathBytes = 60) => ({ path: `/${String(i).padStart(pathBytes - 1, 'p')}`, size: 1 << 30, mtimeMs: 1796248602187.123, sha256: 'f'.repeat(64) });
    const largest = Array.from({ length: MAX_LOCAL_FILES }, (_, i) => file(i, MAX_LOCAL_FILE_PATH_BYTES / MAX_LOCAL_FILES));
    expect(() => parseMessage(reply, { localFiles: largest })).not.toThrow();
    expect(encode({ ok: true, localFiles: largest }).byteLength).toBeLessThan(MAX_CONTROL_MESSAGE_BYTES);
    expect(refusal(reply, { localFiles: [...largest, file(MAX_LOCAL_FILES)] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refusal(reply, { localFiles: [file(1, 4096), ...largest.slice(1)] }).message).toMatch(/paths exceed 262144 bytes/);
    expect(refusal(reply, { localFiles: [{ ...file(1), sha256: 'F'.repeat(64) }] }).message).toMatch(/sha256/);
    expect(refusal(reply, { localFiles: [{ ...file(1), path: 'relative' }] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refusal(agentVerbs[AgentVerb.CHECK_FILES].reply, { missing: [], different: [{ path: '/x', why: 'colour' }] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });

  test("a source's root directories and a target's answer about them are bounded: 256 absolute paths, defaulting to none", () => {
    const reply = agentVerbs[AgentVerb.MIGRATABLE].reply;
    const dirs = Array.from({ length: MAX_ROOT_DIRS }, (_, i) => `/d${i}`);
    expect(parseMessage(reply, { localFiles: [] })).toEqual({ localFiles: [], rootDirs: [] });
    expect(parseMessage(reply, { localFiles: [], rootDirs: dirs }).rootDirs).toHaveLength(MAX_ROOT_DIRS);
    expect(refusal(reply, { localFiles: [], rootDirs: [...dirs, '/one-more'] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refusal(reply, { localFiles: [], rootDirs: ['relative'] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
    const check = agentVerbs[AgentVerb.CHECK_FILES];
    expect(parseMessage(check.request, { v: PROTOCOL_VERSION, files: [] })).toMatchObject({ dirs: [] });
    expect(refusal(check.request, { v: PROTOCOL_VERSION, files: [], dirs: [...dirs, '/one-more'] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(refusal(check.reply, { missing: [], different: [], missingDirs: ['../etc'] }).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });

  test('a migration reply keeps the transport the request asked for', () => {
    const { migration: m } = parseMessage(coordVerbs[CoordVerb.MIGRATE].reply, { migration: { ...migration, transportPreference: 'direct' } });
    expect(m.transportPreference).toBe('direct');
  });
});
