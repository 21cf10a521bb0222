import type { AttackProtocol } from '../attack/attack-csv.js';
import type { PromptLayout } from '../datasets/prompts.js';
import type { EncoderSummary } from './evaluate.js';
import type { GenerationSettings } from './run-state.js';

/** What `safe-sd eval` writes to report.json. */
export interface EvalReport {
  settings: GenerationSettings & {
    prompts: string;
    promptLayout: PromptLayout | null;
    promptCount: number;
    encoders: string[];
    generatedBy: string;
    classifiers: Array<{ name: string; classes: readonly string[]; rule?: string }>;
    attack: AttackProtocol | null;
    clip: string | null;
    fidFeatures: string | null;
    fidReference: { source: string; images?: number } | null;
  };
  encoders: EncoderSummary[];
  counts: {
    prompts: number;
    expectedImages: number;
    generatedThisRun: number;
    failedJobs: Record<string, string>;
    droppedServers: Array<{ address: string; reason: string }>;
  };
  timings: { generationSeconds: number; scoringSeconds: number; perEncoderGenerationSeconds: Record<string, number> };
  conventions: Record<string, string>;
  warnings: string[];
}
