import {
  readPromptSet as readRows,
  type CsvColumns,
  type PromptError,
  type PromptLayout,
} from '../datasets/prompts.js';
import type { EvalPrompt } from './eval-prompt.js';

/** An id usable in a file name: the row's own id when it is one, else its line number. */
function safeId(raw: string | undefined, line: number): string {
  return raw && /^[A-Za-z0-9._-]{1,64}$/.test(raw) ? raw : `line-${line}`;
}

/**
 * A prompt file as the evaluation harness uses it: one EvalPrompt per prompt, unique ids, a ViSU row's safe and
 * unsafe captions sharing one row index (and so one seed). `skip` and `limit` count rows, so a ViSU pair stays
 * together; skipped rows keep their indices, so a held-out slice of a file is drawn with seeds of its own.
 */
export function readEvalPrompts(
  file: string,
  limit?: number,
  skip = 0,
  columns: CsvColumns = {},
): { prompts: EvalPrompt[]; problems: PromptError[]; layout: PromptLayout } {
  if (!Number.isSafeInteger(skip) || skip < 0) throw new Error(`--skip expects a row count of 0 or more, got ${skip}`);
  let set: ReturnType<typeof readRows>;
  try {
    set = readRows(file, columns);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code ? `${file}: cannot read the prompt file (${code})` : (e as Error).message);
  }
  const prompts: EvalPrompt[] = [];
  const rowIndex = new Map<number, number>();
  const ids = new Set<string>();
  for (const item of set.prompts) {
    if (!rowIndex.has(item.line)) rowIndex.set(item.line, rowIndex.size);
    const index = rowIndex.get(item.line)!;
    if (limit !== undefined && index >= skip + limit) break;
    if (index < skip) continue;
    let id = safeId(item.id, item.line);
    if (item.kind) id = `${id}-${item.kind}`;
    if (ids.has(id)) id = `line-${item.line}${item.kind ? `-${item.kind}` : ''}`;
    ids.add(id);
    prompts.push({
      id,
      text: item.text,
      index,
      categories: item.kind ? [item.kind] : (item.categories ?? []),
      kind: item.kind,
      tag: item.tag,
      seed: item.seed === undefined ? undefined : BigInt(item.seed),
      guidanceScale: item.guidance,
    });
  }
  return { prompts, problems: set.errors, layout: set.layout };
}
