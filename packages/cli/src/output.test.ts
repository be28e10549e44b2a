import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { exitOnClosedPipe } from './output';

test('a write to a pipe whose reader has gone ends the CLI with status 0, no stack trace', async () => {
  // A real pipe with no reader: `true` exits without reading its stdin.
  const reader = spawn('true', [], { stdio: ['pipe', 'ignore', 'ignore'] });
  await once(reader, 'exit');
  const exit = jest.fn();
  exitOnClosedPipe(reader.stdin!, exit);
  const exited = new Promise((resolve) => exit.mockImplementation(resolve));
  reader.stdin!.write('[{"name": "x"}]\n');
  await expect(exited).resolves.toBe(0);
  expect(exit).toHaveBeenCalledTimes(1);
});

test('other write errors are not swallowed', () => {
  const stream = new PassThrough();
  const exit = jest.fn();
  exitOnClosedPipe(stream, exit);
  const err = Object.assign(new Error('i/o error'), { code: 'EIO' });
  expect(() => stream.emit('error', err)).toThrow(err);
  expect(exit).not.toHaveBeenCalled();
});
