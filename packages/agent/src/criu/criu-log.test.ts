import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MAX_CRIU_ERROR_LINE_CHARS, parseCriuErrorLines, readCriuFailureDetails, tailLines } from './criu-log';

const LOG = [
  '(00.030107) Found mmap_min_addr 0x10000',
  "(00.030159) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
  '(00.030194) No inventory.img image',
  '(00.030197) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)',
  ' 13973: Error (criu/files-reg.c:2175): File tmp/x.log has bad size 60 (expect 0)',
  '(00.040000) Warn  (compel/arch/x86/src/lib/infect.c:418): Will restore 6647 with interrupted system call',
  '',
].join('\n');

describe('parseCriuErrorLines', () => {
  it('keeps the Error lines, including those of restoring children, and drops the harmless RLIMIT one', () => {
    expect(parseCriuErrorLines(LOG)).toEqual([
      '(00.030197) Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)',
      '13973: Error (criu/files-reg.c:2175): File tmp/x.log has bad size 60 (expect 0)',
    ]);
  });

  it('caps the number and length of lines', () => {
    const many = Array.from({ length: 50 }, (_, i) => `(0.0) Error (criu/x.c:${i}): ${'y'.repeat(1000)}`).join('\n');
    const lines = parseCriuErrorLines(many, 3);
    expect(lines).toHaveLength(3);
    expect(lines[0]?.length).toBe(MAX_CRIU_ERROR_LINE_CHARS + 3);
  });
});

describe('readCriuFailureDetails', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-criu-log-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('prefers the log file, then stderr, then the tail', async () => {
    const logPath = path.join(dir, 'restore.log');
    await fs.writeFile(logPath, LOG);
    expect(await readCriuFailureDetails(logPath, 'Error (x.c:1): from stderr')).toHaveLength(2);
    await fs.writeFile(logPath, 'line one\nline two\n');
    expect(await readCriuFailureDetails(logPath, 'Error (x.c:1): from stderr')).toEqual(['Error (x.c:1): from stderr']);
    expect(await readCriuFailureDetails(logPath, '')).toEqual(['line one', 'line two']);
    expect(await readCriuFailureDetails(path.join(dir, 'missing.log'), 'usage: criu ...')).toEqual(['usage: criu ...']);
    expect(tailLines('a\n\nb\nc\n', 2)).toEqual(['b', 'c']);
  });
});
