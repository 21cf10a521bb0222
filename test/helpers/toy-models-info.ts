import type { ModelsInfo } from '../../src/pipeline/engine-api.js';

/** What the toy pipeline's engine reports, for validation tests: its defaults, the given step limits and encoders. */
export function toyModelsInfo(maxSteps: Record<string, number>, encoders = ['original']): ModelsInfo {
  return {
    defaultPipeline: 'toy',
    pipelines: [
      {
        name: 'toy',
        defaultEncoder: encoders[0],
        defaultWidth: 64,
        defaultHeight: 64,
        defaultSteps: 25,
        defaultGuidanceScale: 5,
        defaultScheduler: 'pndm',
        crossAttentionDim: 32,
        limits: { maxPixels: 4 * 64 * 64, maxBatchPixels: 16 * 64 * 64 },
        maxSteps,
      },
    ],
    encoders: encoders.map((name) => ({
      name,
      pipeline: 'toy',
      hiddenSize: 32,
      source: name,
      safeClip: false,
      layers: 2,
    })),
  };
}
