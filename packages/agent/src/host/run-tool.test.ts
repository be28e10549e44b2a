import { ErrorCode } from '@ferry/protocol';
import { runTool } from './run-tool';

test('returns the tool\'s stdout', async () => {
  expect(await runTool('/bin/sh', ['-c', 'echo hello'], { timeoutMs: 5000, code: ErrorCode.INTERNAL, failure: 'sh failed' })).toBe('hello\n');
});

test('a failing tool becomes a FerryError with the code asked for, its stderr in the message and the details', async () => {
  const failing = runTool('/bin/sh', ['-c', 'echo first >&2; echo "second line" >&2; exit 3'], { timeoutMs: 5000, code: ErrorCode.FAILED_PRECONDITION, failure: 'sh failed' });
  await expect(failing).rejects.toMatchObject({
    code: ErrorCode.FAILED_PRECONDITION,
    message: 'sh failed: first\nsecond line',
    details: ['first', 'second line'],
  });
});

test('tailChars keeps only the end of a long complaint', async () => {
  const failing = runTool('/bin/sh', ['-c', 'echo 0123456789 >&2; exit 1'], { timeoutMs: 5000, code: ErrorCode.INTERNAL, failure: 'sh failed', tailChars: 4 });
  await expect(failing).rejects.toMatchObject({ message: 'sh failed: 6789' });
});
