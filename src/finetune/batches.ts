import { Rng } from '../core/rng.js';

/**
 * Batches of row indices in a shuffled order, a fresh order every epoch; incomplete tail batches are dropped (as
 * DataLoader(drop_last=True)), so every step sees a full batch. Its state is plain numbers, for checkpoints.
 */
export class BatchOrder {
  private constructor(
    readonly rows: number,
    readonly batch: number,
    private readonly rng: Rng,
    public order: number[],
    public position: number,
    public epoch: number,
  ) {}

  static start(rows: number, batch: number, seed: number): BatchOrder {
    if (batch > rows) throw new Error(`batch size ${batch} is larger than the ${rows} usable rows`);
    const rng = Rng.fromSeed(seed);
    return new BatchOrder(rows, batch, rng, rng.permutation(rows), 0, 0);
  }

  static restore(
    rows: number,
    batch: number,
    s: { order: number[]; position: number; epoch: number; rng: number },
  ): BatchOrder {
    if (s.order.length !== rows)
      throw new Error(`the checkpoint's data order covers ${s.order.length} rows but the data has ${rows} usable rows`);
    return new BatchOrder(rows, batch, new Rng(s.rng), s.order, s.position, s.epoch);
  }

  next(): number[] {
    if (this.position + this.batch > this.rows) {
      this.order = this.rng.permutation(this.rows);
      this.position = 0;
      this.epoch++;
    }
    const out = this.order.slice(this.position, this.position + this.batch);
    this.position += this.batch;
    return out;
  }

  get state(): { order: number[]; position: number; epoch: number; rng: number } {
    return { order: this.order, position: this.position, epoch: this.epoch, rng: this.rng.state };
  }
}
