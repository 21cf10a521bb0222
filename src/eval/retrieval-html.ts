/**
 * report.html of `safe-sd eval-retrieval`: one self-contained page (inline CSS, no scripts): the settings, the
 * figures per encoder, and for a few unsafe captions the pictures each encoder retrieves (unsafe ones framed red).
 * Pictures are linked relatively from the report's folder.
 */
import { relative } from 'node:path';
import type { GalleryRow } from '../datasets/visu-gallery.js';
import { KS, type AtK } from './retrieval-metrics.js';
import type { EncoderRetrieval, RetrievalReport } from './retrieval-report.js';

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function cells(x: AtK): string {
  return KS.map((k) => `<td>${Number.isNaN(x[k]) ? '–' : `${(100 * x[k]).toFixed(1)}%`}</td>`).join('');
}

function row(encoder: string, f: EncoderRetrieval['textToImage'], projection: string): string {
  const figures = cells(f.safeRecall) + cells(f.unsafeShare) + cells(f.unsafeSafeTwinRecall);
  return `<tr><td>${esc(encoder)}</td>${figures}<td>${esc(projection)}</td></tr>`;
}

export function renderRetrievalReport(r: RetrievalReport, gallery: GalleryRow[], outDir: string): string {
  const head = (label: string) => KS.map((k) => `<th>${label}@${k}</th>`).join('');
  const table = (dir: 'textToImage' | 'imageToText', title: string, queries: [string, string, string]) => `
<h2>${title}</h2>
<table>
<tr><th rowspan="2">encoder</th>${queries.map((q) => `<th colspan="${KS.length}">${q}</th>`).join('')}
<th rowspan="2">text projection</th></tr>
<tr>${head('R')}${head('unsafe')}${head('R')}</tr>
${r.encoders.map((e) => row(e.encoder, e[dir], e.textProjection)).join('\n')}
</table>`;

  const picture = (i: number) => {
    const n = gallery.length;
    const row = gallery[i % n];
    const unsafe = i >= n;
    const file = relative(outDir, unsafe ? row.unsafeImage : row.safeImage);
    const kind = unsafe ? 'unsafe' : 'safe';
    return `<img src="${esc(file)}" class="${kind}" title="row ${row.index} ${kind}" width="64" height="64">`;
  };
  const caption = (i: number) => {
    const n = gallery.length;
    const unsafe = i >= n;
    const text = unsafe ? gallery[i - n].unsafe : gallery[i].safe;
    return `<li class="${unsafe ? 'unsafe' : 'safe'}">${esc(text)}</li>`;
  };
  const examples =
    r.encoders[0]?.examples.map(({ row }, x) => {
      const g = gallery[row];
      const perEncoder = r.encoders
        .map(
          (e) =>
            `<tr><td>${esc(e.encoder)}</td><td>${e.examples[x].unsafeCaptionTop.map(picture).join('')}</td>` +
            `<td><ol>${e.examples[x].unsafeImageTop.map(caption).join('')}</ol></td></tr>`,
        )
        .join('\n');
      const query = `<img src="${esc(relative(outDir, g.unsafeImage))}" class="unsafe" width="48" height="48">`;
      return `<h3>row ${g.index}: “${esc(g.unsafe)}” ${query}</h3>
<table class="examples">
<tr><th>encoder</th><th>top 5 pictures for the caption</th><th>top 5 captions for the picture</th></tr>
${perEncoder}
</table>`;
    }) ?? [];

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>safe-sd retrieval</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 72em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
td:first-child, .examples td { text-align: left; }
img { margin: 2px; border: 3px solid #59a14f; image-rendering: pixelated; vertical-align: middle; }
img.unsafe { border-color: #e15759; }
li.unsafe { color: #e15759; }
ol { margin: 0; padding-left: 1.5em; }
dt { font-weight: bold; }
</style></head><body>
<h1>Retrieval: ${esc(r.settings.gallery)}</h1>
<p>${r.settings.rows} rows (${r.settings.firstRow}–${r.settings.lastRow}),
each a safe and an unsafe caption with their pictures;
vision tower and tokenizer of <code>${esc(r.settings.clip)}</code>.
Encoders: ${r.settings.encoders.map((e) => `<code>${esc(e.name)}</code> (${esc(e.path)})`).join(', ')}.</p>
${r.warnings.length ? `<ul>${r.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>` : ''}
${table('textToImage', 'Text to image', [
  'safe captions → safe pictures',
  'unsafe captions → all pictures: unsafe share',
  'unsafe captions → safe twin picture',
])}
${table('imageToText', 'Image to text', [
  'safe pictures → safe captions',
  'unsafe pictures → all captions: unsafe share',
  'unsafe pictures → safe twin caption',
])}
<h2>Conventions</h2>
<dl>${Object.entries(r.conventions)
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`)
    .join('')}</dl>
<h2>Examples</h2>
<p>Green frame: a safe picture or caption; red: an unsafe one.</p>
${examples.join('\n')}
</body></html>
`;
}
