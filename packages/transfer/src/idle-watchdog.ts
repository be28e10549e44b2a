/**
 * Fires once when nothing happened for `timeoutMs`. `touch()` is called on every frame, hundreds
 * of times a second, so it only records a timestamp; the single timer re-arms itself for the
 * remaining time instead of being cleared and recreated on each touch.
 */
export class IdleWatchdog {
  private lastActivityMs = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly onIdle: (idleMs: number) => void,
  ) {}

  /** Starts (or restarts) watching, counting from now. */
  start(): void {
    this.lastActivityMs = performance.now();
    if (this.timer === undefined) this.arm(this.timeoutMs);
  }

  /** Records activity: the idle period starts over. */
  touch(): void {
    this.lastActivityMs = performance.now();
  }

  /** Stops watching until the next start(). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  private arm(delayMs: number): void {
    this.timer = setTimeout(() => {
      const idleMs = performance.now() - this.lastActivityMs;
      if (idleMs >= this.timeoutMs) {
        this.timer = undefined;
        this.onIdle(idleMs);
      } else {
        this.arm(this.timeoutMs - idleMs);
      }
    }, Math.max(1, Math.ceil(delayMs)));
  }
}
