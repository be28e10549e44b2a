import { isFailedPrecondition } from '@ferry/protocol';
import { memoryNeeded, placeWorkload, type PlacementHost } from './placement';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function host(name: string, over: Partial<PlacementHost> = {}): PlacementHost {
  return { name, alive: true, cordoned: false, criuUsable: true, availableBytes: 4 * GiB, workloadCount: 0, incoming: 0, incomingBytes: 0, ...over };
}
const wl = { name: 'web', host: 'h1', rssBytes: 512 * MiB };
const opts = { maxIncomingPerHost: 2 };

describe('placeWorkload', () => {
  it('never picks the source, and picks the least loaded host', () => {
    const p = placeWorkload(wl, [host('h1'), host('h2', { workloadCount: 3 }), host('h3', { workloadCount: 1 })], opts);
    expect(p.host).toBe('h3');
    expect(p.reason).toMatch(/^h3: 1 workload/);
  });

  it('breaks ties by most free memory, then by name', () => {
    expect(placeWorkload(wl, [host('h2', { availableBytes: 2 * GiB }), host('h3', { availableBytes: 3 * GiB })], opts).host).toBe('h3');
    expect(placeWorkload(wl, [host('h3'), host('h2')], opts).host).toBe('h2');
  });

  it('skips lost, cordoned, CRIU-unusable and excluded hosts and says so', () => {
    const hosts = [
      host('h2', { alive: false }),
      host('h3', { cordoned: true }),
      host('h4', { criuUsable: false }),
      host('h5'),
      host('h6', { workloadCount: 9 }),
    ];
    const p = placeWorkload(wl, hosts, { ...opts, exclude: new Set(['h5']) });
    expect(p.host).toBe('h6');
    expect(p.reason).toContain('lost: h2');
    expect(p.reason).toContain('cordoned: h3');
    expect(p.reason).toContain('CRIU unusable: h4');
    expect(p.reason).toContain('excluded: h5');
  });

  it('requires memory headroom, counting migrations already on their way', () => {
    const need = memoryNeeded(wl.rssBytes);
    expect(need).toBeGreaterThan(wl.rssBytes);
    const tight = host('h2', { availableBytes: need - 1 });
    const busy = host('h3', { availableBytes: need + 100 * MiB, incoming: 1, incomingBytes: 200 * MiB });
    const ok = host('h4', { availableBytes: need, workloadCount: 50 });
    expect(placeWorkload(wl, [tight, busy, ok], opts).host).toBe('h4');
  });

  it('honours the per-target limit of incoming migrations, and counts incoming as load', () => {
    expect(placeWorkload(wl, [host('h2', { incoming: 2 }), host('h3', { workloadCount: 5 })], opts).host).toBe('h3');
    expect(placeWorkload(wl, [host('h2', { incoming: 1 }), host('h3', { workloadCount: 0 })], opts).host).toBe('h3');
  });

  it('fails with FAILED_PRECONDITION and every refusal when no host fits', () => {
    let err: unknown;
    try {
      placeWorkload(wl, [host('h1'), host('h2', { cordoned: true }), host('h3', { availableBytes: 1 })], opts);
    } catch (e) {
      err = e;
    }
    expect(isFailedPrecondition(err)).toBe(true);
    expect((err as Error).message).toMatch(/no host can take web/);
    expect((err as Error).message).toContain('cordoned: h2');
    expect((err as Error).message).toMatch(/bytes free: h3/);
  });

  it('decides among a thousand hosts well under a millisecond on average', () => {
    const hosts = Array.from({ length: 1_000 }, (_, i) => host(`h${i}`, { workloadCount: (i * 7919) % 40, availableBytes: ((i * 104729) % 64) * GiB }));
    const started = process.hrtime.bigint();
    const rounds = 200;
    for (let i = 0; i < rounds; i++) placeWorkload({ ...wl, host: `h${i}` }, hosts, opts);
    const perDecisionMs = Number(process.hrtime.bigint() - started) / 1e6 / rounds;
    expect(perDecisionMs).toBeLessThan(10);
  });
});
