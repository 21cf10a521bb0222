/**
 * report.html: one self-contained page (inline CSS and SVG, no scripts): the settings, a summary table per encoder,
 * bar charts of the NSFW rate per category with the encoders side by side, and an image grid with the encoders'
 * pictures of each prompt next to each other (images linked relatively from the run folder).
 */
import { protocolLine } from '../attack/attack-csv.js';
import type { EvalPrompt } from './eval-prompt.js';
import type { ImageScore, Rate } from './evaluate.js';
import type { EvalReport } from './report.js';

const COLOURS = ['#4e79a7', '#e15759', '#59a14f', '#f28e2b', '#b07aa1', '#76b7b2', '#edc948', '#9c755f'];

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function pct(r: Rate | undefined): string {
  return r && r.rate !== null ? `${(100 * r.rate).toFixed(1)}% <small>(${r.count}/${r.of})</small>` : '–';
}

function num(x: number | null | undefined, digits = 2): string {
  return x === null || x === undefined ? '–' : x.toFixed(digits);
}

/** Grouped bars: one group per label, one bar per series, values in [0, 1]. */
function barChart(
  title: string,
  labels: string[],
  series: Array<{ name: string; values: Array<number | null> }>,
): string {
  // Wide enough for the longest label under a group and for the bold title (about 8.5 px a character).
  const groupW = Math.max(24 * series.length + 24, 70, ...labels.map((l) => l.length * 6.5 + 16));
  const left = 40;
  const h = 180;
  const top = 24;
  const width = Math.max(left + labels.length * groupW + 20, left + title.length * 8.5, left + series.length * 120);
  const barW = (groupW - 20) / series.length;
  const parts: string[] = [`<text x="${left}" y="15" font-size="13" font-weight="bold">${esc(title)}</text>`];
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const y = top + h - t * h;
    parts.push(
      `<line x1="${left}" x2="${width - 10}" y1="${y}" y2="${y}" stroke="#ddd"/>` +
        `<text x="${left - 4}" y="${y + 4}" font-size="10" text-anchor="end">${t * 100}%</text>`,
    );
  }
  labels.forEach((label, g) => {
    const x0 = left + g * groupW + 10;
    series.forEach((s, k) => {
      const v = s.values[g];
      if (v === null) return;
      const bh = v * h;
      const x = x0 + k * barW;
      parts.push(
        `<rect x="${x}" y="${top + h - bh}" width="${barW - 2}" height="${bh}" fill="${COLOURS[k % COLOURS.length]}">` +
          `<title>${esc(s.name)} · ${esc(label)}: ${(100 * v).toFixed(1)}%</title></rect>`,
      );
      parts.push(
        `<text x="${x + (barW - 2) / 2}" y="${top + h - bh - 3}" font-size="9" text-anchor="middle">` +
          `${Math.round(100 * v)}</text>`,
      );
    });
    parts.push(
      `<text x="${x0 + (groupW - 20) / 2}" y="${top + h + 14}" font-size="11" text-anchor="middle">` +
        `${esc(label)}</text>`,
    );
  });
  const legend = series.map(
    (s, k) =>
      `<rect x="${left + k * 120}" y="${top + h + 24}" width="10" height="10" fill="${COLOURS[k % COLOURS.length]}"/>` +
      `<text x="${left + k * 120 + 14}" y="${top + h + 33}" font-size="11">${esc(s.name)}</text>`,
  );
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + h + 44}" role="img">` +
    `${parts.join('')}${legend.join('')}</svg>`
  );
}

function layoutText(l: EvalReport['settings']['promptLayout']): string {
  if (!l) return 'unknown';
  const cols = l.columns
    ? Object.entries(l.columns)
        .filter(([, v]) => v)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ')
    : '';
  return `${l.name}${l.attack ? ', attack set' : ''}${cols ? ` (${cols})` : ''}`;
}

const MISSING_STYLE =
  '.missing{width:96px;height:96px;display:inline-flex;align-items:center;justify-content:center;' +
  'background:#eee;color:#999}';
const PICTURES_NOTE =
  'Same prompt and seed in each row; a red outline marks a picture some classifier judged unsafe; ' +
  "captions: each classifier's top class · CLIPScore.";

export function renderReport(
  r: EvalReport,
  prompts: EvalPrompt[],
  scores: ImageScore[],
  o: { gridPrompts: number; imagesPerPrompt: number; exists: (file: string) => boolean },
): string {
  const encs = r.encoders;
  const classifiers = r.settings.classifiers.map((c) => c.name);
  const ownClassifiers = [...new Set(encs.flatMap((e) => Object.keys(e.ownClass)))];

  const attack = encs.some((e) => e.attackSuccess);
  const summaryRows = encs.map((e) => {
    const own = ownClassifiers.flatMap((c) => [pct(e.ownClass[c]?.unsafe), pct(e.ownClass[c]?.safe)]);
    const asr = attack ? `<td>${pct(e.attackSuccess ?? undefined)}</td>` : '';
    return (
      `<tr><th>${esc(e.encoder)}</th><td>${e.images}</td>${asr}<td>${pct(e.nsfwRate)}</td>` +
      `${classifiers.map((c) => `<td>${pct(e.nsfwRateByClassifier[c])}</td>`).join('')}` +
      `${own.map((x) => `<td>${x}</td>`).join('')}<td>${num(e.fid)}</td><td>${num(e.clipScore)}</td><td>` +
      `${num(r.timings.perEncoderGenerationSeconds[e.encoder], 1)}</td></tr>`
    );
  });
  const ownHead = ownClassifiers.flatMap((c) => {
    const tag = encs.map((e) => e.ownClass[c]?.unsafe.class).find(Boolean) ?? 'tag';
    return [
      `unsafe prompts → ${esc(tag)} <small>(${esc(c)})</small>`,
      `safe prompts → own class <small>(${esc(c)})</small>`,
    ];
  });
  const summary =
    `<table><tr><th>encoder</th><th>images</th>` +
    `${attack ? '<th>attack success (prompts)</th>' : ''}<th>NSFW (any classifier)</th>` +
    `${classifiers.map((c) => `<th>NSFW: ${esc(c)}</th>`).join('')}` +
    `${ownHead.map((h) => `<th>${h}</th>`).join('')}<th>FID</th><th>CLIPScore</th><th>generation s</th></tr>` +
    `${summaryRows.join('')}</table>`;

  const categories = [...new Set(encs.flatMap((e) => Object.keys(e.byCategory)))].sort();
  const catRows = categories.map((cat) => {
    const cells = encs.map(
      (e) => `<td>${pct(e.byCategory[cat]?.nsfwRate)}</td><td>${num(e.byCategory[cat]?.clipScore)}</td>`,
    );
    return `<tr><th>${esc(cat)}</th>${cells.join('')}</tr>`;
  });
  const catTable =
    `<table><tr><th rowspan="2">category</th>` +
    `${encs.map((e) => `<th colspan="2">${esc(e.encoder)}</th>`).join('')}</tr><tr>` +
    `${encs.map(() => '<th>NSFW</th><th>CLIPScore</th>').join('')}</tr>${catRows.join('')}</table>`;

  const charts: string[] = [];
  if (classifiers.length > 0) {
    const labels = ['all', ...categories];
    charts.push(
      barChart(
        'NSFW rate per category (any classifier)',
        labels,
        encs.map((e) => ({
          name: e.encoder,
          values: labels.map((l) => (l === 'all' ? e.nsfwRate.rate : (e.byCategory[l]?.nsfwRate.rate ?? null))),
        })),
      ),
    );
    for (const c of classifiers) {
      charts.push(
        barChart(
          `NSFW rate per category: ${c}`,
          labels,
          encs.map((e) => ({
            name: e.encoder,
            values: labels.map(
              (l) =>
                (l === 'all' ? e.nsfwRateByClassifier[c]?.rate : e.byCategory[l]?.nsfwRateByClassifier[c]?.rate) ??
                null,
            ),
          })),
        ),
      );
    }
  }
  for (const c of ownClassifiers) {
    const tag = encs.map((e) => e.ownClass[c]?.unsafe.class).find(Boolean) ?? 'tag';
    charts.push(
      barChart(
        `${c}: prompts drawn as their own class`,
        [`unsafe → ${tag}`, 'safe → own shape'],
        encs.map((e) => ({
          name: e.encoder,
          values: [e.ownClass[c]?.unsafe.rate ?? null, e.ownClass[c]?.safe.rate ?? null],
        })),
      ),
    );
  }

  const byFile = new Map(scores.map((s) => [s.file, s]));
  const gridRows = prompts.slice(0, o.gridPrompts).map((p) => {
    const cells = r.settings.encoders.map((enc) => {
      const imgs = Array.from({ length: o.imagesPerPrompt }, (_, k) => `images/${enc}/${p.id}-${k}.png`).map((f) => {
        if (!o.exists(f)) return '<div class="missing">missing</div>';
        const s = byFile.get(f);
        const verdict = s
          ? Object.entries(s.verdicts)
              .map(([c, v]) => `${c}: ${v.top}${v.unsafe ? ' ⚠' : ''}`)
              .join('\n')
          : '';
        const flagged = s && Object.values(s.verdicts).some((v) => v.unsafe);
        const tops = s
          ? Object.values(s.verdicts)
              .map((v) => v.top)
              .join(' · ')
          : '';
        const score = s?.clipScore !== undefined ? ` · ${s.clipScore.toFixed(1)}` : '';
        return (
          `<figure class="${flagged ? 'flag' : ''}"><a href="${esc(f)}">` +
          `<img src="${esc(f)}" alt="${esc(f)}" title="${esc(verdict)}"></a>` +
          `<figcaption>${esc(tops)}${score}</figcaption></figure>`
        );
      });
      return `<td>${imgs.join('')}</td>`;
    });
    return (
      `<tr><th class="prompt"><code>${esc(p.id)}</code><br>${esc(p.text)}<br><small>` +
      `${esc(p.categories.join(', '))}</small></th>${cells.join('')}</tr>`
    );
  });
  const grid =
    `<table class="grid"><tr><th>prompt</th>` +
    `${r.settings.encoders.map((e) => `<th>${esc(e)}</th>`).join('')}</tr>${gridRows.join('')}</table>` +
    `${prompts.length > o.gridPrompts ? `<p>First ${o.gridPrompts} of ${prompts.length} prompts shown.</p>` : ''}`;

  const s = r.settings;
  const settingsList = [
    ['prompts', `${s.prompts} (${s.promptCount})`],
    ['prompt layout', layoutText(s.promptLayout)],
    ['pipeline', s.pipeline],
    ['size', `${s.width}×${s.height}`],
    ['steps / guidance / scheduler', `${s.steps} / ${s.guidanceScale} / ${s.scheduler}`],
    ['base seed / images per prompt', `${s.baseSeed} / ${s.imagesPerPrompt}`],
    ['generated by', s.generatedBy],
    ['classifiers', s.classifiers.map((c) => `${c.name}: ${c.rule ?? 'its own rule'}`).join('; ') || 'none'],
    ...(s.attack ? [['attack', protocolLine(s.attack)]] : []),
    ['CLIP (CLIPScore, FD-CLIP)', s.clip ?? 'none'],
    [
      'FID features / reference',
      `${s.fidFeatures ?? 'none'} / ` +
        `${s.fidReference ? `${s.fidReference.source} (${s.fidReference.images ?? '?'} images)` : 'none'}`,
    ],
  ].map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`);
  const failed = Object.entries(r.counts.failedJobs);
  const problems = [
    ...failed.map(([k, m]) => `generation of ${k} failed: ${m}`),
    ...r.counts.droppedServers.map((d) => `server ${d.address} dropped: ${d.reason}`),
    ...r.warnings.filter((w) => !/generation failed/.test(w)),
  ];

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>safe-sd evaluation</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
small{color:#666}
.grid img{width:96px;height:96px;image-rendering:pixelated;display:block}
.grid figure{display:inline-block;margin:2px;text-align:center}
.grid figure.flag img{outline:3px solid #e15759}
.grid figcaption{font-size:10px;color:#444;max-width:96px}
.grid th.prompt{max-width:280px;font-weight:normal}
${MISSING_STYLE}
.charts svg{margin:0 16px 16px 0}
</style></head><body>
<h1>safe-sd evaluation</h1>
<table>${settingsList.join('')}</table>
<h2>Summary</h2>${summary}
<div class="charts">${charts.join('')}</div>
<h2>Per category</h2>${catTable}
${
  problems.length > 0
    ? `<h2>Problems (${problems.length})</h2><ul>${problems
        .slice(0, 50)
        .map((p) => `<li>${esc(p)}</li>`)
        .join('')}</ul>`
    : ''
}
<h2>Pictures</h2>
<p>${PICTURES_NOTE}</p>
${grid}
<h2>Conventions</h2><ul>${Object.entries(r.conventions)
    .map(([k, v]) => `<li><b>${esc(k)}</b>: ${esc(v)}</li>`)
    .join('')}</ul>
</body></html>
`;
}
