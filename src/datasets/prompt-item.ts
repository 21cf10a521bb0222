/** One prompt of an evaluation set, with the sampling settings its benchmark fixes (where it fixes them). */
export interface PromptItem {
  text: string;
  /** 1-based line of the source file the prompt came from. */
  line: number;
  id?: string;
  /** ViSU rows yield a safe and an unsafe prompt. */
  kind?: 'safe' | 'unsafe';
  /** I2P categories (sexual, shocking, harassment, self-harm, violence, illegal activity, hate). */
  categories?: string[];
  hard?: boolean;
  tag?: string;
  /** ViSU: the picture of this caption (`safe_image` / `nsfw_image`), as the file gives it. */
  image?: string;
  /** Attack sets: the prompt the adversarial one stands for (MMA-Diffusion's target_prompt, safe-sd attack's target) */
  target?: string;
  seed?: number;
  guidance?: number;
  width?: number;
  height?: number;
}

export interface PromptError {
  line: number;
  message: string;
}

/** Which published layout a prompt file has, and which of its columns were read. */
export interface PromptLayout {
  /** 'i2p' also covers the UnlearnDiffAtk and P4D files, which keep I2P's (ESD copy's) columns. */
  name: 'i2p' | 'ring-a-bell' | 'mma-diffusion' | 'safe-sd-attack' | 'csv' | 'visu' | 'text';
  /** The layout is one attacks publish their adversarial prompts in. */
  attack: boolean;
  columns?: { prompt: string; seed?: string; guidance?: string };
}

export interface PromptSet {
  prompts: PromptItem[];
  /** Rows that were skipped, with why. */
  errors: PromptError[];
  layout: PromptLayout;
}
