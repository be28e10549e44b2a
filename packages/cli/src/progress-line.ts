/** A one-line progress bar for terminals, redrawn in place with a carriage return. */
import { formatBytes } from './output';

const BAR_WIDTH = 30;

export class ProgressLine {
  private active = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  update(label: string, bytes: number, total: number): void {
    const frac = total > 0 ? Math.min(1, bytes / total) : 0;
    const filled = Math.round(frac * BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
    const amount = total > 0 ? `${formatBytes(bytes)} / ~${formatBytes(total)}` : formatBytes(bytes);
    this.out.write(`\r\x1b[2K${bar} ${label.padEnd(14)} ${amount}`);
    this.active = true;
  }

  done(): void {
    if (this.active) this.out.write('\r\x1b[2K');
    this.active = false;
  }
}
