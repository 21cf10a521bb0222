import type { GraphBuilder } from '../onnx/graph.js';
import { shapeEquals, type F32Tensor } from '../core/tensor.js';
import type { WeightStore } from '../core/weights.js';
import { InputError } from '../core/errors.js';

/**
 * A module's place in the checkpoint tree while a graph is built. `child('q_proj')` descends one level, `param`
 * fetches the weight at the current path; so weight names follow from the module tree, never from a mapping table.
 */
/**
 * How attention() is lowered. 'fused': ORT's `com.microsoft` MultiHeadAttention contrib op (one kernel, no [S, S]
 * score tensor round trip through the graph); 'plain': MatMul/Softmax in standard ONNX, which the fine-tuning autodiff
 * differentiates and every runtime supports. docs/benchmarks.md has the measurement behind the defaults.
 */
export type AttentionKernel = 'fused' | 'plain';

export interface ScopeOptions {
  /**
   * Weights for which this returns true become graph inputs instead of initializers, so a training loop can feed
   * new values every step; their starting values are collected in `Scope.inputs`.
   */
  asInput?: (key: string) => boolean;
  /**
   * Makes up a weight the store lacks, in the shape the module asks for: architectures built from random weights
   * (benchmarks, the SD 1.5 shape test) take their key set and shapes from the module tree alone.
   */
  fabricate?: (key: string, shape: number[]) => F32Tensor;
  /**
   * One lowering for every unmasked attention of the graph instead of each module's measured choice: 'plain' for
   * training graphs (the autodiff has no rule for the fused contrib op), either for benchmarks.
   */
  attentionKernel?: AttentionKernel;
}

interface Shared {
  used: Set<string>;
  inputs: Map<string, F32Tensor>;
  options: ScopeOptions;
}

export class Scope {
  private constructor(
    readonly g: GraphBuilder,
    readonly weights: WeightStore,
    readonly path: string,
    private readonly shared: Shared,
  ) {}

  static root(g: GraphBuilder, weights: WeightStore, path = '', options: ScopeOptions = {}): Scope {
    return new Scope(g, weights, path, { used: new Set(), inputs: new Map(), options });
  }

  child(name: string | number): Scope {
    return new Scope(this.g, this.weights, this.key(String(name)), this.shared);
  }

  /** Weights made graph inputs (see ScopeOptions.asInput), by key, with their checkpoint values. */
  get inputs(): Map<string, F32Tensor> {
    return this.shared.inputs;
  }

  get attentionKernel(): AttentionKernel | undefined {
    return this.shared.options.attentionKernel;
  }

  key(name: string): string {
    return this.path ? `${this.path}.${name}` : name;
  }

  has(name: string): boolean {
    return this.weights.has(this.key(name));
  }

  /** The weight `name` of this module as a graph value, checked against the shape the config implies. */
  param(name: string, shape: number[]): string {
    const key = this.key(name);
    const made =
      this.shared.options.fabricate && !this.weights.has(key) ? this.shared.options.fabricate(key, shape) : undefined;
    if (made) {
      this.shared.used.add(key);
      return this.g.initializer(key, made);
    }
    const actual = this.weights.shape(key);
    if (!actual) throw new InputError(`${this.weights.source}: missing weight ${key} (expected shape [${shape}])`);
    if (!shapeEquals(actual, shape)) {
      throw new InputError(
        `${this.weights.source}: weight ${key} has shape [${actual}] but the config implies [${shape}]`,
      );
    }
    this.shared.used.add(key);
    if (this.shared.options.asInput?.(key)) {
      if (!this.shared.inputs.has(key)) {
        this.shared.inputs.set(key, this.weights.get(key));
        this.g.input(key, 'float32', shape);
      }
    } else if (!this.g.initializers.has(key)) {
      this.g.initializer(key, this.weights.get(key));
    }
    return key;
  }

  /** Checkpoint keys under this scope that no module consumed. */
  private unused(ignore: RegExp[]): string[] {
    const prefix = this.path ? `${this.path}.` : '';
    return this.weights
      .keys()
      .filter((k) => k.startsWith(prefix) && !this.shared.used.has(k) && !ignore.some((r) => r.test(k)));
  }

  /**
   * Fail on checkpoint keys under this scope that the module tree did not read (`ignore` aside): a leftover key
   * means the config does not describe the checkpoint, and a graph built anyway would compute something else.
   */
  refuseUnused(model: string, ignore: RegExp[] = []): void {
    const unused = this.unused(ignore);
    if (!unused.length) return;
    const some = `${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', ...' : ''}`;
    const source = this.weights.source;
    throw new Error(`${source}: ${unused.length} weight(s) not used by the ${model} its config describes: ${some}`);
  }
}
