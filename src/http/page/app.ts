/// <reference lib="dom" />
/**
 * The comparison page: a form, then one column per ticked encoder with a progress bar, live previews and the final
 * image with its verdict, parameters and a download link; earlier comparisons stay listed below. Talks to
 * `/v1/pipelines` and the Server-Sent Events of `/v1/compare`. Bundled by esbuild when the server starts.
 */
import type { CompareEvent, CompareResultJson, ImageJson, PipelinesResponse } from '../compare-events.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>('form');
const status = $<HTMLSpanElement>('status');
const columnsEl = $<HTMLElement>('columns');
const historyEl = $<HTMLOListElement>('history');
const HISTORY_LENGTH = 8;

let models: PipelinesResponse | undefined;
const history: Array<{ prompt: string; result: CompareResultJson }> = [];

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, unknown> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function setStatus(text: string, error = false) {
  status.textContent = text;
  status.classList.toggle('error', error);
}

function headers(): Record<string, string> {
  const token = $<HTMLInputElement>('token').value || localStorage.getItem('safe-sd-token') || '';
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** A 401 shows the token field; the token is kept for the next visit. */
function needToken(): void {
  $<HTMLLabelElement>('token-label').hidden = false;
  setStatus('this server wants a bearer token: enter it and try again', true);
}

async function loadModels(): Promise<void> {
  const res = await fetch('/v1/pipelines', { headers: headers() });
  if (res.status === 401) return needToken();
  if (!res.ok) return setStatus(`could not list the models: HTTP ${res.status}`, true);
  models = (await res.json()) as PipelinesResponse;
  const pipeline = $<HTMLSelectElement>('pipeline');
  pipeline.replaceChildren(...models.pipelines.map((p) => el('option', { value: p.name, textContent: p.name })));
  pipeline.value = models.default_pipeline;
  pipeline.onchange = () => showPipeline();
  showPipeline();
}

function showPipeline(): void {
  const p = models!.pipelines.find((x) => x.name === $<HTMLSelectElement>('pipeline').value)!;
  $<HTMLInputElement>('steps').value = String(p.defaultSteps);
  $<HTMLInputElement>('guidance').value = String(p.defaultGuidanceScale);
  const scheduler = $<HTMLSelectElement>('scheduler');
  scheduler.replaceChildren(...models!.schedulers.map((s) => el('option', { value: s, textContent: s })));
  scheduler.value = p.defaultScheduler;
  const native = p.defaultWidth;
  const sizes = [...new Set([native / 2, native, native * 1.5, native * 2].filter((s) => s % 8 === 0))];
  $<HTMLSelectElement>('size').replaceChildren(
    ...sizes.map((s) => el('option', { value: String(s), textContent: `${s}×${s}`, selected: s === native })),
  );
  const boxes = p.encoders.map((e, i) =>
    el(
      'label',
      {},
      el('input', { type: 'checkbox', name: 'encoder', value: e.name, checked: i < 2 }),
      e.name,
      ...(e.safeClip ? [el('span', { className: 'safe-clip', textContent: 'Safe-CLIP' })] : []),
    ),
  );
  $<HTMLFieldSetElement>('encoders').replaceChildren(el('legend', { textContent: 'Encoders' }), ...boxes);
}

interface Column {
  bar: HTMLProgressElement;
  frame: HTMLDivElement;
  info: HTMLDivElement;
}

function makeColumns(encoders: string[]): Column[] {
  return encoders.map((name) => {
    const bar = el('progress', { max: 1, value: 0 });
    const frame = el('div', { className: 'frame' });
    const info = el('div');
    columnsEl.append(el('article', { className: 'column' }, el('h3', { textContent: name }), bar, frame, info));
    return { bar, frame, info };
  });
}

function verdictText(img: ImageJson): HTMLElement {
  const v = img.safety;
  if (!v) return el('span', { className: 'verdict ok', textContent: 'no safety classifier' });
  const top = Object.entries(v.scores).sort((a, b) => b[1] - a[1])[0];
  const text = v.flagged
    ? v.reason
    : `passed ${v.classifier} (${top ? `${top[0]} ${top[1].toFixed(2)}` : 'no scores'})`;
  return el('span', { className: `verdict ${v.flagged ? 'flagged' : 'ok'}`, textContent: text });
}

function showImage(col: Column, img: ImageJson): void {
  col.bar.value = col.bar.max;
  if (img.png) {
    const src = `data:image/png;base64,${img.png}`;
    col.frame.replaceChildren(el('img', { src, alt: img.parameters, className: 'final' }));
    const name = `safe-sd-${img.encoder}-${img.seed}.png`;
    col.info.replaceChildren(
      verdictText(img),
      el('div', { className: 'params', textContent: img.parameters }),
      el('a', { href: src, download: name, textContent: 'download PNG' }),
    );
  } else {
    col.frame.replaceChildren();
    col.info.replaceChildren(verdictText(img), el('div', { className: 'params', textContent: img.parameters }));
  }
}

function showResult(result: CompareResultJson): void {
  columnsEl.replaceChildren();
  const cols = makeColumns(result.columns.map((c) => c.encoder));
  for (const [i, col] of cols.entries()) showImage(col, result.columns[i]!.images[0]!);
}

function addHistory(prompt: string, result: CompareResultJson): void {
  history.unshift({ prompt, result });
  history.length = Math.min(history.length, HISTORY_LENGTH);
  historyEl.replaceChildren(
    ...history.map((h) => {
      const thumbs = h.result.columns.map((c) =>
        el('img', { src: `data:image/png;base64,${c.images[0]?.png ?? ''}`, alt: c.encoder, title: c.encoder }),
      );
      const li = el(
        'li',
        {},
        ...thumbs,
        ` ${h.prompt} · seed ${h.result.seed} · ${h.result.columns.map((c) => c.encoder).join(' / ')}`,
      );
      li.onclick = () => showResult(h.result);
      return li;
    }),
  );
}

/** Server-Sent Events from a fetch body (EventSource cannot POST a JSON body nor send a bearer token). */
async function* events(body: ReadableStream<Uint8Array>): AsyncGenerator<CompareEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) yield { event, data: JSON.parse(data) } as CompareEvent;
    }
  }
}

async function compare(ev: SubmitEvent): Promise<void> {
  ev.preventDefault();
  const encoders = [...document.querySelectorAll<HTMLInputElement>('input[name=encoder]:checked')].map((b) => b.value);
  if (encoders.length < 2) return setStatus('tick at least two encoders to compare', true);
  const token = $<HTMLInputElement>('token').value;
  if (token) localStorage.setItem('safe-sd-token', token);
  const prompt = $<HTMLTextAreaElement>('prompt').value;
  const size = Number($<HTMLSelectElement>('size').value);
  const seed = Number($<HTMLInputElement>('seed').value);
  const request = {
    pipeline: $<HTMLSelectElement>('pipeline').value,
    encoders,
    prompt,
    negative_prompt: $<HTMLTextAreaElement>('negative').value,
    seed: seed >= 0 ? seed : undefined,
    steps: Number($<HTMLInputElement>('steps').value),
    guidance_scale: Number($<HTMLInputElement>('guidance').value),
    scheduler: $<HTMLSelectElement>('scheduler').value,
    width: size,
    height: size,
  };
  const button = $<HTMLButtonElement>('generate');
  button.disabled = true;
  columnsEl.replaceChildren();
  const cols = makeColumns(encoders);
  setStatus('sending…');
  try {
    const res = await fetch('/v1/compare', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers() },
      body: JSON.stringify(request),
    });
    if (res.status === 401) return needToken();
    if (!res.ok || !res.body) {
      const err = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
      return setStatus(err.error?.message ?? `HTTP ${res.status}`, true);
    }
    for await (const e of events(res.body)) {
      if (e.event === 'queued')
        setStatus(e.data.position === 0 ? 'starting…' : `waiting: ${e.data.position} ahead in the queue`);
      else if (e.event === 'progress') {
        setStatus(`denoising: step ${e.data.step} of ${e.data.total}`);
        for (const c of cols) {
          c.bar.max = e.data.total;
          c.bar.value = e.data.step;
        }
      } else if (e.event === 'preview') {
        const src = `data:image/png;base64,${e.data.png}`;
        cols[e.data.column]?.frame.replaceChildren(
          el('img', { src, alt: `step ${e.data.step}`, className: 'preview' }),
        );
      } else if (e.event === 'result') {
        for (const [i, c] of e.data.columns.entries()) showImage(cols[i]!, c.images[0]!);
        setStatus(`done: seed ${e.data.seed}`);
        addHistory(prompt, e.data);
        $<HTMLInputElement>('seed').placeholder = e.data.seed;
      } else if (e.event === 'error') setStatus(e.data.error.message, true);
    }
  } catch (err) {
    setStatus(`connection failed: ${(err as Error).message}`, true);
  } finally {
    button.disabled = false;
  }
}

form.addEventListener('submit', (ev) => void compare(ev));
void loadModels();
