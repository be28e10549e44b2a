/**
 * Runs tasks one at a time, in call order. CRIU 4.1's parasite creates a fixed-name directory in
 * the dumped task's mount namespace to reach /proc, so two dumps at once in one host's mount
 * namespace fail ("Can't create a directory (-17)", "Can't get proc fd"): the agent runs its dumps
 * (and, to be safe, its restores) through one of these each.
 */
export class SerialLock {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.catch(() => undefined).then(task);
    this.tail = result;
    return result;
  }
}
