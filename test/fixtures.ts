import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Golden outputs of the reference implementations, copied from ../shared/fixtures/reference. */
export const FIXTURES = fileURLToPath(new URL('./fixtures/reference/', import.meta.url));

export function fixture(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

/** The embedded default model, copied from ../shared/toy-world. */
export const WEIGHTS = fileURLToPath(new URL('../weights/', import.meta.url));

export function weightsPath(...parts: string[]): string {
  return join(WEIGHTS, ...parts);
}
