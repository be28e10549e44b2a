/** A one-line progress bar for terminals, redrawn in place with a carriage return. */
import { formatBytes } from './output';

const BAR_WIDTH = 30;

export class ProgressLine {
  private active = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  /** Bytes moved of about `total` (a migration's transfer). */
  update(label: string, bytes: number, total: number): void {
    const amount = total > 0 ? `${formatBytes(bytes)} / ~${formatBytes(total)}` : formatBytes(bytes);
    this.draw(label, total > 0 ? bytes / total : 0, amount);
  }

  /** Items finished of `total` (a drain's workloads). */
  updateCount(label: string, finished: number, total: number): void {
    this.draw(label, total > 0 ? finished / total : 1, `${finished}/${total}`);
  }

  private draw(label: string, fraction: number, amount: string): void {
    const filled = Math.round(Math.max(0, Math.min(1, fraction)) * BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
    this.out.write(`\r\x1b[2K${bar} ${label.padEnd(14)} ${amount}`);
    this.active = true;
  }

  done(): void {
    if (this.active) this.out.write('\r\x1b[2K');
    this.active = false;
  }
}
