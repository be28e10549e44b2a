import { SerialLock } from './serial-lock';

describe('SerialLock', () => {
  it('runs tasks one at a time in call order, and a failure does not block the next', async () => {
    const lock = new SerialLock();
    const log: string[] = [];
    let active = 0;
    const task = (name: string, ms: number, fail = false) => async () => {
      active++;
      expect(active).toBe(1);
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
      active--;
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([lock.run(task('a', 20)), lock.run(task('b', 5, true)), lock.run(task('c', 1))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });
});
