/**
 * Keeps up to `depth` results of an async iterator in preparation while the consumer works on
 * the current one, so reading the next chunks from disk overlaps with waiting for acks.
 * An async generator queues concurrent next() calls and runs them in order, which is what
 * makes asking ahead safe.
 */
export async function* readAhead<T>(source: AsyncIterator<T>, depth: number): AsyncGenerator<T> {
  const pending: Promise<IteratorResult<T>>[] = [];
  try {
    for (;;) {
      while (pending.length < depth) pending.push(source.next());
      const result = await pending.shift()!;
      if (result.done) return;
      yield result.value;
    }
  } finally {
    // Queued reads may still reject (e.g. the source failed); they are moot once we stop.
    for (const p of pending) p.catch(() => undefined);
    await source.return?.(undefined);
  }
}
