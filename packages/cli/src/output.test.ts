import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { exitOnClosedPipe, printable } from './output';

test('a write to a pipe whose reader has gone ends the CLI with status 0, no stack trace', async () => {
  // A real pipe whose reader closed it, as `| true` or `| head -1` do: the shell closes its stdin, says so, and lives on.
  const reader = spawn('/bin/sh', ['-c', 'exec 0<&-; echo closed; exec sleep 60'], { stdio: ['pipe', 'pipe', 'ignore'] });
  try {
    await once(reader.stdout!, 'data');
    const exit = jest.fn();
    const exited = new Promise((resolve) => exit.mockImplementation(resolve));
    exitOnClosedPipe(reader.stdin!, exit);
    reader.stdin!.write('[{"name": "x"}]\n');
    await expect(exited).resolves.toBe(0);
    expect(exit).toHaveBeenCalledTimes(1);
  } finally {
    reader.kill('SIGKILL');
  }
});

test('other write errors are not swallowed', () => {
  const stream = new PassThrough();
  const exit = jest.fn();
  exitOnClosedPipe(stream, exit);
  const err = Object.assign(new Error('i/o error'), { code: 'EIO' });
  expect(() => stream.emit('error', err)).toThrow(err);
  expect(exit).not.toHaveBeenCalled();
});

test('text from other hosts reaches the terminal without its control characters (no escape sequences)', () => {
  // An agent could report an argv that clears the screen and retitles the window.
  expect(printable('sleep\u001b[2J\u001b]0;pwned\u0007 100')).toBe('sleep\\x1b[2J\\x1b]0;pwned\\x07 100');
  expect(printable('a\u009bb\u007fc\nd')).toBe('a\\x9bb\\x7fc\\x0ad');
  expect(printable('plain text, ünïcödé')).toBe('plain text, ünïcödé');
});
