// Pictures of a run: loss curves from the step log and a bar chart of probe results, drawn with
// Vega-Lite (compiled to Vega and rendered headless to SVG), plus a PNG of each via sharp.
import { readFile, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

async function render(spec: vegaLite.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface CurvePoint {
  step: number;
  loss: number;
  recon: number;
  consistency: number;
}

/** Loss, recon and consistency against the step, one line per run, one panel per metric. */
export async function lossCurvesSvg(runs: Record<string, readonly CurvePoint[]>): Promise<string> {
  const values = Object.entries(runs).flatMap(([run, points]) =>
    points.flatMap((p) => (['loss', 'recon', 'consistency'] as const).map((metric) => ({ run, step: p.step, metric, value: p[metric] }))));
  return render({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { column: { field: 'metric', type: 'nominal', sort: ['loss', 'recon', 'consistency'], title: null } },
    spec: {
      width: 260, height: 180,
      mark: { type: 'line', strokeWidth: 1.5 },
      encoding: {
        x: { field: 'step', type: 'quantitative' },
        y: { field: 'value', type: 'quantitative', scale: { zero: false }, title: null },
        color: { field: 'run', type: 'nominal' },
      },
    },
    resolve: { scale: { y: 'independent' } },
  } as vegaLite.TopLevelSpec);
}

/** Grouped bars: one group per run, one bar per metric (e.g. linear probe and kNN top-1). */
export async function resultsSvg(rows: readonly { run: string; metric: string; value: number }[], title = 'top-1 accuracy'): Promise<string> {
  return render({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values: rows as { run: string; metric: string; value: number }[] },
    width: { step: 24 }, height: 200, title,
    mark: 'bar',
    encoding: {
      x: { field: 'run', type: 'nominal', title: null },
      xOffset: { field: 'metric' },
      y: { field: 'value', type: 'quantitative', scale: { domain: [0, 1] }, title: null },
      color: { field: 'metric', type: 'nominal' },
    },
  } as vegaLite.TopLevelSpec);
}

/** Writes `<base>.svg` and `<base>.png`. */
export async function writeChart(svg: string, base: string): Promise<void> {
  await writeFile(`${base}.svg`, svg);
  await sharp(Buffer.from(svg)).png().toFile(`${base}.png`);
}

/** The points of a trainer log (log.jsonl). */
export async function readStepLog(file: string): Promise<CurvePoint[]> {
  return (await readFile(file, 'utf8')).trim().split('\n').filter(Boolean).map((line) => {
    const { step, loss, recon, consistency } = JSON.parse(line);
    return { step, loss, recon, consistency };
  });
}

export interface BudgetPoint {
  /** the method (one line each), e.g. 'MAE' / 'EMAE' */
  method: string;
  /** pretraining time, minutes */
  minutes: number;
  /** e.g. 'fine-tune', 'linear probe', 'kNN' */
  metric: string;
  value: number;
}

/**
 * Accuracy against pretraining time: one panel per metric, one line per method; `baselines`
 * (e.g. training from scratch) as dashed horizontal rules in their metric's panel.
 */
export async function accuracyVsTimeSvg(points: readonly BudgetPoint[], baselines: readonly { metric: string; label: string; value: number }[] = []): Promise<string> {
  const metrics = [...new Set(points.map((p) => p.metric))];
  return render({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values: [...points.map((p) => ({ ...p, kind: 'run' })), ...baselines.map((b) => ({ metric: b.metric, method: b.label, value: b.value, kind: 'baseline' }))] },
    facet: { column: { field: 'metric', type: 'nominal', sort: metrics, title: null } },
    spec: {
      width: 240, height: 200,
      layer: [
        {
          transform: [{ filter: "datum.kind === 'run'" }],
          mark: { type: 'line', point: true, strokeWidth: 1.5 },
          encoding: {
            x: { field: 'minutes', type: 'quantitative', scale: { type: 'log', base: 2 }, title: 'pretraining minutes (wall, one CPU thread)' },
            y: { field: 'value', type: 'quantitative', scale: { zero: false }, title: 'test top-1' },
            color: { field: 'method', type: 'nominal' },
          },
        },
        {
          transform: [{ filter: "datum.kind === 'baseline'" }],
          mark: { type: 'rule', strokeDash: [4, 4] },
          encoding: { y: { field: 'value', type: 'quantitative' }, color: { field: 'method', type: 'nominal' } },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  } as vegaLite.TopLevelSpec);
}
