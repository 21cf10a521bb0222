/**
 * Turns between the batches one inference worker runs at once. UNet calls block the worker's thread, so batches
 * interleave only where they await: before each denoising step each batch asks for a turn, and the batch with the
 * least work left goes next. A short request that arrives while a long one runs thus waits for one step of it, not
 * for all of it; the long one resumes when the short ones are done.
 */
interface Waiter {
  batch: number;
  /** Work left (UNet pixels × steps); the smallest goes first, ties in arrival order. */
  workLeft: number;
  resolve(): void;
}

export class StepGate {
  private holder: number | undefined;
  private readonly waiting: Waiter[] = [];

  /** Wait for `batch`'s next turn; the turn it holds counts until the next batch is chosen. */
  async turn(batch: number, workLeft: number): Promise<void> {
    // One macrotask first, so messages that arrived meanwhile (a new batch, a cancel) are seen before choosing.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise<void>((resolve) => {
      this.waiting.push({ batch, workLeft, resolve });
      if (this.holder === batch) this.holder = undefined;
      this.grant();
    });
  }

  /** `batch` is done (or between turns): let the next one go. */
  release(batch: number): void {
    if (this.holder !== batch) return;
    this.holder = undefined;
    this.grant();
  }

  private grant() {
    if (this.holder !== undefined || this.waiting.length === 0) return;
    let best = 0;
    for (let i = 1; i < this.waiting.length; i++)
      if (this.waiting[i]!.workLeft < this.waiting[best]!.workLeft) best = i;
    const [next] = this.waiting.splice(best, 1);
    this.holder = next!.batch;
    next!.resolve();
  }
}
