import * as ort from 'onnxruntime-node';
import { f16ToF32, f32ToF16, type F32Tensor } from '../core/tensor.js';
import { createSession, observedRun, type SessionSettings } from './session.js';

/**
 * A session whose callers need not know how the model was exported: ONNX files from optimum or diffusers' script
 * name and type their inputs differently (int32 or int64 ids, a scalar or per-sample timestep, int64 or float
 * timesteps, float16 I/O). Feeds are given in float32 / int64 in a fixed order; each is matched to a declared
 * input by name (else by position) and cast and shaped to what the session declares. Outputs come back in
 * declaration order as float32.
 */

/** A feed: canonical name, the other names exporters use, and the value (float32, or ids as int64). */
export interface Feed {
  names: string[];
  value: F32Tensor | { dtype: 'I64'; shape: number[]; data: BigInt64Array };
  /** A per-sample value that may be declared as a scalar or a single element (a timestep). */
  uniform?: boolean;
}

type Declared = { name: string; type: string; rank?: number; dims: readonly (number | string | null | undefined)[] };

function declaredInputs(session: ort.InferenceSession): Declared[] {
  return session.inputNames.map((name, i) => {
    const m = session.inputMetadata[i];
    if (!m?.isTensor) return { name, type: 'float32', dims: [] };
    return { name, type: m.type, rank: m.shape.length, dims: m.shape };
  });
}

/** Feeds already of the declared type are handed to ORT as they are: a copy per UNet step shows on small models. */
function castTo(type: string, values: ArrayLike<number | bigint>, shape: number[], what: string): ort.Tensor {
  const floats = () => (values instanceof Float32Array ? values : Float32Array.from(values, Number));
  const round = (v: number | bigint) => Math.round(Number(v));
  switch (type) {
    case 'float32':
      return new ort.Tensor('float32', floats(), shape);
    case 'float16':
      return new ort.Tensor('float16', f32ToF16(floats()), shape);
    case 'int64':
      return new ort.Tensor(
        'int64',
        values instanceof BigInt64Array ? values : BigInt64Array.from(values, (v) => BigInt(round(v))),
        shape,
      );
    case 'int32':
      return new ort.Tensor('int32', Int32Array.from(values, round), shape);
    default:
      throw new Error(`${what}: input type ${type} is not supported`);
  }
}

export class AdaptedSession {
  private readonly inputs: Declared[];

  private constructor(
    readonly session: ort.InferenceSession,
    readonly file: string,
  ) {
    this.inputs = declaredInputs(session);
  }

  static async create(file: string, settings: SessionSettings = {}): Promise<AdaptedSession> {
    return new AdaptedSession(await createSession(file, settings), file);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Run with `feeds` in the model's canonical input order; float32 outputs in declaration order. */
  async run(feeds: Feed[]): Promise<F32Tensor[]> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    this.inputs.forEach((input, i) => {
      const feed = feeds.find((f) => f.names.includes(input.name)) ?? feeds[i];
      if (!feed)
        throw new Error(
          `${this.file}: no value for input '${input.name}' (given ${feeds.map((f) => f.names[0]).join(', ')})`,
        );
      const { data, shape } = feed.value;
      let values: ArrayLike<number | bigint> = data;
      let dims = shape;
      if (feed.uniform && (input.rank === 0 || (input.rank === 1 && input.dims[0] === 1))) {
        for (let k = 1; k < data.length; k++) {
          if (data[k] !== data[0])
            throw new Error(
              `${this.file}: input '${input.name}' takes one value for the whole batch, but the batch has several`,
            );
        }
        values = [data[0]];
        dims = input.rank === 0 ? [] : [1];
      }
      ortFeeds[input.name] = castTo(input.type, values, dims, `${this.file}: input '${input.name}'`);
    });
    const out = await observedRun(this.session, ortFeeds);
    return this.session.outputNames.map((name) => {
      const t = out[name];
      const dims = [...t.dims];
      if (t.type === 'float32') return { dtype: 'F32', shape: dims, data: t.data as Float32Array };
      if (t.type === 'float16') return { dtype: 'F32', shape: dims, data: f16ToF32(t.data as Uint16Array) };
      throw new Error(`${this.file}: output '${name}' is ${t.type}, expected float32 or float16`);
    });
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
