/**
 * Admission control: what a request costs, and whether it may enter the queue. A request is refused at once when
 * it breaks its pipeline's limits, or when the measured speed of that pipeline says it cannot finish before its
 * deadline; otherwise one valid request could hold a worker for minutes and everything behind it would wait.
 */
import type { GenerationRequest, PipelineLimits } from '../pipeline/engine-api.js';

/** Images × width × height over a request's jobs (a Compare's columns each count): what a batch holds in memory. */
export function batchPixels(requests: readonly GenerationRequest[]): number {
  let sum = 0;
  for (const r of requests) sum += r.numImages * r.width * r.height;
  return sum;
}

/** Pixels the UNet sees per denoising step: every image twice when classifier-free guidance doubles the batch. */
export function unetPixelsPerStep(requests: readonly GenerationRequest[]): number {
  let sum = 0;
  for (const r of requests) sum += r.numImages * (r.guidanceScale > 1 ? 2 : 1) * r.width * r.height;
  return sum;
}

/**
 * Seconds per UNet pixel per step of each pipeline, measured from the steps the workers report (a moving average,
 * so a slower machine or a loaded one is followed within a few steps). Unknown until the pipeline ran a step.
 */
export class StepRates {
  private readonly rates = new Map<string, number>();

  /** `seconds` one step of `pixels` UNet pixels took. */
  observe(pipeline: string, pixels: number, seconds: number): void {
    if (!(pixels > 0) || !(seconds >= 0)) return;
    const rate = seconds / pixels;
    const old = this.rates.get(pipeline);
    this.rates.set(pipeline, old === undefined ? rate : 0.8 * old + 0.2 * rate);
  }

  /** Seconds per UNet pixel per step, if measured. */
  rate(pipeline: string): number | undefined {
    return this.rates.get(pipeline);
  }

  /** Estimated seconds of `steps` further steps of these requests run as one batch; undefined before a measurement. */
  seconds(requests: readonly GenerationRequest[], steps = requests[0]?.steps ?? 0): number | undefined {
    const rate = requests[0] && this.rates.get(requests[0].pipeline);
    return rate === undefined ? undefined : rate * unetPixelsPerStep(requests) * steps;
  }
}

export type Refusal =
  /** Breaks a limit of its pipeline: never admissible, whatever the load. */
  | { kind: 'too-large'; message: string }
  /** Cannot finish before its deadline: on its own, or behind the work already queued. */
  | { kind: 'too-slow'; message: string };

export interface AdmissionInput {
  requests: readonly GenerationRequest[];
  limits: PipelineLimits;
  /** Milliseconds left until the deadline; Infinity when there is none. */
  msLeft: number;
  /** Estimated seconds until a worker could start on it (work queued and running, per worker). */
  waitSeconds: number;
  rates: StepRates;
}

const fmt = (s: number) => (s < 10 ? s.toFixed(1) : s.toFixed(0));

/** Why the request may not enter the queue, or undefined when it may. */
export function refusal({ requests, limits, msLeft, waitSeconds, rates }: AdmissionInput): Refusal | undefined {
  const pixels = batchPixels(requests);
  if (pixels > limits.maxBatchPixels) {
    const first = requests[0]!;
    return {
      kind: 'too-large',
      message:
        `${requests.length} encoder(s) x ${first.numImages} image(s) at ${first.width}x${first.height} is ${pixels} ` +
        `pixels, over pipeline '${first.pipeline}''s limit of ${limits.maxBatchPixels} per request ` +
        `(manifest limits.max_batch_pixels)`,
    };
  }
  if (!Number.isFinite(msLeft)) return undefined;
  const own = rates.seconds(requests);
  if (own === undefined) return undefined;
  const left = msLeft / 1000;
  const perStep = own / requests[0]!.steps;
  if (own > left) {
    return {
      kind: 'too-slow',
      message:
        `needs about ${fmt(own)} s (${requests[0]!.steps} steps at ${(perStep * 1000).toFixed(0)} ms measured per ` +
        `step), but its deadline is ${fmt(left)} s away`,
    };
  }
  if (own + waitSeconds > left) {
    return {
      kind: 'too-slow',
      message:
        `needs about ${fmt(own)} s after about ${fmt(waitSeconds)} s of work queued ahead of it, but its deadline ` +
        `is ${fmt(left)} s away; retry later or with a later deadline`,
    };
  }
  return undefined;
}
