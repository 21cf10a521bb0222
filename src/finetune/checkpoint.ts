import { existsSync } from 'node:fs';
import { SafetensorsFile, writeSafetensors } from '../core/safetensors.js';
import type { F32Tensor } from '../core/tensor.js';

/**
 * A training checkpoint in one safetensors file (written to a temporary name and renamed, so a kill leaves the
 * previous checkpoint whole): the parameters, the optimizer's tensors, and the run's counters in the metadata.
 */

export interface RunState {
  /** Steps done. */
  step: number;
  /** Batch order of the current epoch (row indices), how far it has been consumed, and the epoch number. */
  order: number[];
  position: number;
  epoch: number;
  /** The data-order generator's state after drawing `order`. */
  rng: number;
  /** What the run was started with; a resume with other settings is refused. */
  settings: Record<string, unknown>;
  /** Optimizer scalars (its step counter and hyper-parameters). */
  optimizer: Record<string, unknown>;
}

export interface Checkpoint {
  state: RunState;
  params: Map<string, F32Tensor>;
  /** Optimizer tensors (moments), by the optimizer's own names. */
  optimizer: Map<string, F32Tensor>;
}

const PARAM = 'param.';
const OPTIM = 'optim.';

export function saveCheckpoint(path: string, c: Checkpoint): void {
  const tensors = new Map<string, F32Tensor>();
  for (const [k, v] of c.params) tensors.set(PARAM + k, v);
  for (const [k, v] of c.optimizer) tensors.set(OPTIM + k, v);
  writeSafetensors(path, tensors, { state: JSON.stringify(c.state) });
}

export function loadCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new Error(`${path}: no checkpoint to resume from`);
  const file = SafetensorsFile.open(path);
  try {
    const raw = file.metadata.state;
    if (!raw) throw new Error(`${path}: not a training checkpoint (no state in its metadata)`);
    const state = JSON.parse(raw) as RunState;
    const params = new Map<string, F32Tensor>();
    const optimizer = new Map<string, F32Tensor>();
    for (const name of file.names) {
      if (name.startsWith(PARAM)) params.set(name.slice(PARAM.length), file.readF32(name));
      else if (name.startsWith(OPTIM)) optimizer.set(name.slice(OPTIM.length), file.readF32(name));
    }
    return { state, params, optimizer };
  } finally {
    file.close();
  }
}
