import { readFileSync } from 'node:fs';

/**
 * A user's text file (config, manifest, JSONL) as UTF-8 without the byte-order mark that Windows editors write
 * first: left in, it makes the first JSON row or object unparseable.
 */
export function readUtf8(path: string): string {
  const text = readFileSync(path, 'utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
