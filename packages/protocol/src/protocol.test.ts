import {
  CheckpointRequest,
  ErrorCode,
  EXIT_CODES,
  FerryError,
  Heartbeat,
  hostOfAgentSubject,
  MigrateRequest,
  PROTOCOL_VERSION,
  RunRequest,
  decode,
  encode,
  encodeError,
  isNotFound,
  parseMessage,
  subjects,
  toFerryError,
} from './index';

const criu = { version: '4.1.1', usable: true, checkOk: true, needsFaultInjection: true, dumpRestoreOk: true };

describe('codec', () => {
  test('round-trips maps, binary and numbers', () => {
    const value = { v: 1, name: 'x', data: Buffer.from([1, 2, 3]), n: 2 ** 40 };
    const back = decode(encode(value)) as typeof value;
    expect(back.name).toBe('x');
    expect(Buffer.from(back.data)).toEqual(Buffer.from([1, 2, 3]));
    expect(back.n).toBe(2 ** 40);
  });

  test.each([
    ['empty', new Uint8Array()],
    ['truncated map', Uint8Array.from([0x82, 0xa1, 0x61])],
    ['string longer than the data', Uint8Array.from([0xa5, 0x61])],
  ])('malformed input (%s) is INVALID_ARGUMENT, not a crash', (_name, bytes) => {
    expect(() => decode(bytes)).toThrow(FerryError);
    try {
      decode(bytes);
    } catch (err) {
      expect((err as FerryError).code).toBe(ErrorCode.INVALID_ARGUMENT);
    }
  });

  test('oversized messages are refused before parsing', () => {
    expect(() => decode(new Uint8Array(2048), 1024)).toThrow(/exceeds the limit/);
  });
});

describe('schemas', () => {
  test('a valid run request passes and gets defaults', () => {
    const req = parseMessage(RunRequest, { v: PROTOCOL_VERSION, name: 'web-1', argv: ['sleep', '1'] });
    expect(req.env).toEqual({});
  });

  test.each([
    ['missing argv', { v: 1, name: 'a' }],
    ['upper-case name', { v: 1, name: 'Web', argv: ['x'] }],
    ['name with a dot (would break subjects)', { v: 1, name: 'a.b', argv: ['x'] }],
    ['relative cwd', { v: 1, name: 'a', argv: ['x'], cwd: 'tmp' }],
    ['cwd with ..', { v: 1, name: 'a', argv: ['x'], cwd: '/tmp/../etc' }],
    ['env name with =', { v: 1, name: 'a', argv: ['x'], env: { 'A=B': 'c' } }],
    ['not an object', 'hello'],
  ])('%s is INVALID_ARGUMENT', (_name, value) => {
    expect(() => parseMessage(RunRequest, value)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  });

  test('another protocol version is FAILED_PRECONDITION', () => {
    expect(() => parseMessage(MigrateRequest, { v: 99, workload: 'a', to: 'h2' })).toThrow(
      expect.objectContaining({ code: ErrorCode.FAILED_PRECONDITION }),
    );
  });

  test('timeouts are bounded', () => {
    const base = { v: 1, migrationId: 'm1', transferId: 'x1', workload: 'w', target: 'h2' };
    expect(() => parseMessage(CheckpointRequest, { ...base, idleTimeoutMs: 10 ** 9 })).toThrow();
    expect(parseMessage(CheckpointRequest, { ...base, idleTimeoutMs: 5000 }).idleTimeoutMs).toBe(5000);
  });

  test('a heartbeat carries what a restarted coordinator needs', () => {
    const hb = { v: 1, host: 'h1', bootId: 'b1', address: '198.18.0.11', criu, seq: 3, memory: { totalBytes: 1, availableBytes: 1 }, workloads: [] };
    expect(parseMessage(Heartbeat, hb).host).toBe('h1');
  });

  test('a host cannot report memory that attracts placement by being impossible', () => {
    const hb = { v: 1, host: 'h1', bootId: 'b1', address: '198.18.0.11', criu, seq: 3, workloads: [] };
    const GIB = 2 ** 30;
    expect(parseMessage(Heartbeat, { ...hb, memory: { totalBytes: 24 * GIB, availableBytes: 20 * GIB } }).memory.availableBytes).toBe(20 * GIB);
    for (const memory of [
      { totalBytes: 8 * GIB, availableBytes: 9 * GIB }, // more free than it has
      { totalBytes: 2 ** 60, availableBytes: 2 ** 60 }, // an exabyte host
      { totalBytes: Number.MAX_VALUE, availableBytes: 1 },
      { totalBytes: 8 * GIB, availableBytes: 0.5 },
      { totalBytes: 8 * GIB, availableBytes: -1 },
    ]) {
      expect(() => parseMessage(Heartbeat, { ...hb, memory })).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
    }
  });
});

describe('subjects', () => {
  test('are versioned and scoped', () => {
    expect(subjects.agent('h1', 'restore')).toBe('ferry.v1.agent.h1.restore');
    expect(subjects.xferData('x-1')).toBe('ferry.v1.xfer.x-1.data');
  });

  test.each(['h1.>', '*', 'H1', '', 'a b'])('refuse a token that would change the subject: %p', (bad) => {
    expect(() => subjects.agent(bad, 'ps')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  });

  test('heartbeat and registration subjects name their host, and only a well-formed one is read back', () => {
    expect(subjects.heartbeat('h1')).toBe('ferry.v1.coord.heartbeat.h1');
    expect(subjects.register('h1')).toBe('ferry.v1.coord.register.h1');
    expect(subjects.allHeartbeats()).toBe('ferry.v1.coord.heartbeat.*');
    expect(hostOfAgentSubject(subjects.heartbeat('node-7'))).toBe('node-7');
    expect(hostOfAgentSubject(subjects.register('h2'))).toBe('h2');
    for (const other of ['ferry.v1.coord.heartbeat', 'ferry.v1.coord.heartbeat.h1.x', 'ferry.v1.coord.ps.h1', 'ferry.v2.coord.heartbeat.h1', 'ferry.v1.coord.heartbeat.H1']) {
      expect(hostOfAgentSubject(other)).toBeNull();
    }
    expect(() => subjects.heartbeat('h1.>')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
  });
});

describe('errors', () => {
  test('keep code, details and cause; predicates branch on code', () => {
    const cause = new Error('low level');
    const err = new FerryError(ErrorCode.NOT_FOUND, 'no host h9', { cause, details: ['Error (criu/x.c:1): y'] });
    expect(isNotFound(err)).toBe(true);
    expect(err.cause).toBe(cause);
    expect(FerryError.fromBody(err.toBody())).toMatchObject({ code: 'NOT_FOUND', details: ['Error (criu/x.c:1): y'] });
  });

  test('unknown errors become INTERNAL; unknown wire codes too', () => {
    expect(toFerryError(new Error('x')).code).toBe(ErrorCode.INTERNAL);
    expect(FerryError.fromBody({ code: 'BOGUS' as never, message: 'm' }).code).toBe(ErrorCode.INTERNAL);
    expect(decode(encodeError(new Error('boom')))).toEqual({ ok: false, error: { code: 'INTERNAL', message: 'boom' } });
  });

  test('every code has a distinct non-zero exit status', () => {
    const statuses = Object.values(EXIT_CODES);
    expect(new Set(statuses).size).toBe(statuses.length);
    expect(statuses.every((s) => s > 1)).toBe(true);
  });
});
