import { ClipTextTransformer, ClipVisionTransformer, textTowerPrefix, visionTowerPrefix } from '../models/clip.js';
import type { LoadedClip } from '../models/clip-loader.js';
import { Linear } from '../models/nn.js';
import { Scope } from '../models/scope.js';
import type { F32Tensor } from '../core/tensor.js';
import { GraphBuilder } from '../onnx/graph.js';
import { type HiddenStates, safeClipLoss, TERMS, type LossValues } from './losses.js';
import { applyLora, loraKey, loraModules, loraShapes, type LoraOptions } from './lora.js';

/**
 * The training graph: the trained towers (their parameters as graph inputs, or frozen with LoRA inputs), the
 * Safe-CLIP loss on their embeddings, and the reference embeddings fed in. The reference model is a frozen copy:
 * Sref / Vref (and the reference hidden states) are computed by separate inference graphs over the original
 * weights and enter here as inputs, so the trained parameters can never leak into them.
 */

/** text: the text tower only (the 4 terms that involve it); full: both towers, all 8 terms. */
export type Mode = 'text' | 'full';

export interface TrainGraphOptions {
  mode: Mode;
  lora?: LoraOptions;
  /** Weight of the optional hidden-state term (0 or absent: the paper's losses only). */
  hiddenWeight?: number;
}

/** Graph input names. */
export const IN = {
  safeIds: 'safe_input_ids',
  nsfwIds: 'nsfw_input_ids',
  safePixels: 'safe_pixel_values',
  nsfwPixels: 'nsfw_pixel_values',
  Sref: 'Sref',
  Vref: 'Vref',
  SrefHidden: 'Sref_last_hidden_state',
} as const;

export const lossOutput = (term: string) => `loss.${term}`;
export const TOTAL = 'loss.total';

export interface TrainGraph {
  g: GraphBuilder;
  /** Trainable inputs with their shapes, in a fixed order. */
  params: Array<{ name: string; shape: number[] }>;
  /**
   * Starting values of full fine-tuning parameters (checkpoint weights). LoRA parameters are initialised by the caller.
   */
  initial: Map<string, F32Tensor>;
  /** Adapted modules, for LoRA. */
  loraModules: string[];
  loss: LossValues;
  /** Output names of the losses present, in TERMS order, then the hidden-state terms. */
  lossOutputs: string[];
}

export function isTrained(key: string, mode: Mode, textPrefix: string, visionPrefix: string): boolean {
  const under = (p: string) => (p ? key.startsWith(`${p}.`) : true);
  if (key.startsWith('text_projection.') || (textPrefix && under(textPrefix))) return true;
  return mode === 'full' && (key.startsWith('visual_projection.') || (!!visionPrefix && under(visionPrefix)));
}

export function requireClipModel(clip: LoadedClip): { projectionDim: number } {
  if (clip.kind !== 'CLIPModel' || clip.projectionDim === undefined) {
    throw new Error(
      `${clip.dir}: fine-tuning needs a CLIPModel (both towers and their projections), this is a ${clip.kind}`,
    );
  }
  return { projectionDim: clip.projectionDim };
}

/** The first and second `batch` rows of x, the safe and the unsafe half of a concatenated batch. */
function halves(g: GraphBuilder, x: string, batch: string, name: string): [string, string] {
  const axis = g.constI64([0]);
  const first = g.op('Slice', [x, g.constI64([0]), batch, axis], {}, { name });
  const second = g.op('Slice', [x, batch, g.constI64([Number.MAX_SAFE_INTEGER]), axis], {}, { name });
  return [first, second];
}

export function buildTrainGraph(clip: LoadedClip, opts: TrainGraphOptions): TrainGraph {
  const { projectionDim: p } = requireClipModel(clip);
  const textCfg = clip.textConfig!;
  const visionCfg = clip.visionConfig!;
  const weights = clip.weights;
  const textPrefix = textTowerPrefix(weights);
  const visionPrefix = visionTowerPrefix(weights);
  const trained = (key: string) => isTrained(key, opts.mode, textPrefix, visionPrefix);

  const g = new GraphBuilder();
  const root = Scope.root(g, weights, '', { asInput: (key) => !opts.lora && trained(key) });

  const safeIds = g.input(IN.safeIds, 'int64', ['batch', 'seq']);
  const nsfwIds = g.input(IN.nsfwIds, 'int64', ['batch', 'seq']);
  const Sref = g.input(IN.Sref, 'float32', ['batch', p]);
  const Vref = g.input(IN.Vref, 'float32', ['batch', p]);
  const batch = g.op(
    'Slice',
    [g.op('Shape', [safeIds], {}, { name: 'batch' }), g.constI64([0]), g.constI64([1])],
    {},
    { name: 'batch' },
  );

  const text = new ClipTextTransformer(textPrefix ? root.child(textPrefix) : root, textCfg);
  const textProjection = new Linear(root.child('text_projection'), textCfg.hiddenSize, p, false);
  const ids = g.op('Concat', [safeIds, nsfwIds], { axis: 0 }, { name: 'text' });
  const textOut = text.forward(ids);
  const [S, U] = halves(
    g,
    g.reshape(textProjection.forward(textOut.pooled), [-1, p], 'text_embeds'),
    batch,
    'text_embeds',
  );
  g.output(S, 'embeds.S', 'float32', ['batch', p]);
  g.output(U, 'embeds.U', 'float32', ['batch', p]);

  let V: string | undefined;
  let G: string | undefined;
  if (opts.mode === 'full') {
    const shape = ['batch', visionCfg.channels, visionCfg.imageSize, visionCfg.imageSize];
    const safePixels = g.input(IN.safePixels, 'float32', shape);
    const nsfwPixels = g.input(IN.nsfwPixels, 'float32', shape);
    const vision = new ClipVisionTransformer(root.child(visionPrefix), visionCfg);
    const visualProjection = new Linear(root.child('visual_projection'), visionCfg.hiddenSize, p, false);
    const visionOut = vision.forward(g.op('Concat', [safePixels, nsfwPixels], { axis: 0 }, { name: 'vision' }));
    [V, G] = halves(
      g,
      g.reshape(visualProjection.forward(visionOut.pooled), [-1, p], 'image_embeds'),
      batch,
      'image_embeds',
    );
    g.output(V, 'embeds.V', 'float32', ['batch', p]);
    g.output(G, 'embeds.G', 'float32', ['batch', p]);
  }

  let hidden: HiddenStates | undefined;
  if (opts.hiddenWeight) {
    const [hs, hu] = halves(g, textOut.lastHiddenState, batch, 'last_hidden_state');
    const SrefHidden = g.input(IN.SrefHidden, 'float32', ['batch', 'seq', textCfg.hiddenSize]);
    hidden = { S: hs, U: hu, Sref: SrefHidden, weight: opts.hiddenWeight };
  }

  const loss = safeClipLoss(g, { S, U, Sref, Vref, V, G }, hidden);
  const lossOutputs: string[] = [];
  for (const term of TERMS) {
    const v = loss.terms[term];
    if (v !== undefined) lossOutputs.push(g.output(v, lossOutput(term), 'float32', []));
  }
  for (const [term, v] of Object.entries(loss.hidden ?? {}))
    lossOutputs.push(g.output(v, lossOutput(term), 'float32', []));
  g.output(loss.total, TOTAL, 'float32', []);

  let params: TrainGraph['params'];
  let modules: string[] = [];
  if (opts.lora) {
    const lora = opts.lora;
    modules = loraModules(g.initializers.keys(), (k) => g.initializers.get(k)!.shape, lora, trained);
    if (!modules.length)
      throw new Error(
        `${clip.dir}: no weights of the trained towers match the LoRA targets ${lora.targets.join(', ')}`,
      );
    const shapes = new Map(modules.map((m) => [m, g.initializers.get(`${m}.weight`)!.shape]));
    applyLora(g, modules, lora);
    params = modules.flatMap((m) => {
      const s = loraShapes(shapes.get(m)!, lora.rank);
      return [
        { name: loraKey(m, 'A'), shape: s.A },
        { name: loraKey(m, 'B'), shape: s.B },
      ];
    });
  } else {
    params = [...root.inputs].map(([name, t]) => ({ name, shape: t.shape }));
  }
  return { g, params, initial: root.inputs, loraModules: modules, loss, lossOutputs };
}
