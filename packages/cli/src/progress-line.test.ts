import { ProgressLine } from './progress-line';

/** A stand-in terminal: what the bar writes, in order. */
function fakeTerminal(): { out: NodeJS.WriteStream; written: string[] } {
  const written: string[] = [];
  const out = { write: (text: string) => (written.push(text), true) } as unknown as NodeJS.WriteStream;
  return { out, written };
}

test('a byte bar redraws in place and fills with the share moved', () => {
  const { out, written } = fakeTerminal();
  const bar = new ProgressLine(out);
  bar.update('transferring', 512, 1024);
  expect(written[0].startsWith('\r\x1b[2K[')).toBe(true);
  expect(written[0]).toContain(`[${'#'.repeat(15)}${'.'.repeat(15)}]`);
  bar.done();
  expect(written[1]).toBe('\r\x1b[2K');
});

test('a count bar shows items finished of the total and is cleared once', () => {
  const { out, written } = fakeTerminal();
  const bar = new ProgressLine(out);
  bar.updateCount('drain h1', 1, 4);
  expect(written.at(-1)).toContain(`[${'#'.repeat(8)}${'.'.repeat(22)}]`);
  expect(written.at(-1)).toMatch(/drain h1\s+1\/4$/);
  bar.done();
  expect(written.at(-1)).toBe('\r\x1b[2K');
  bar.updateCount('drain h1', 4, 4);
  expect(written.at(-1)).toContain(`[${'#'.repeat(30)}]`);
  bar.done();
  bar.done();
  // Cleared after each draw, never twice in a row.
  expect(written.filter((w) => w === '\r\x1b[2K')).toHaveLength(2);
});
