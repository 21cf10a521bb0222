import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Golden outputs of the reference implementations, copied from ../shared/fixtures/reference. */
export const FIXTURES = fileURLToPath(new URL('./fixtures/reference/', import.meta.url));

export function fixture(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}
