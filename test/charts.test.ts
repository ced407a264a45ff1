// Charts render headless to SVG and PNG.
import test from 'ava';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { lossCurvesSvg, resultsSvg, writeChart } from '../lib/index.js';

test('loss curves and probe results render to SVG and PNG', async (t) => {
  const points = Array.from({ length: 20 }, (_, i) => ({ step: i + 1, loss: 2 / (i + 1), recon: 1.8 / (i + 1), consistency: 0.2 / (i + 1) }));
  const svg = await lossCurvesSvg({ emae: points, mae: points.map((p) => ({ ...p, loss: p.loss * 1.1 })) });
  t.true(svg.startsWith('<svg'));
  for (const word of ['loss', 'recon', 'consistency', 'emae', 'mae', 'step']) t.true(svg.includes(word), word);
  const bars = await resultsSvg([{ run: 'EMAE', metric: 'kNN', value: 0.8 }, { run: 'MAE', metric: 'kNN', value: 0.7 }]);
  t.true(bars.includes('EMAE') && bars.includes('top-1 accuracy'));
  const base = path.join(mkdtempSync(path.join(tmpdir(), 'emae-charts-')), 'curves');
  await writeChart(svg, base);
  t.true(existsSync(`${base}.svg`));
  const meta = await sharp(`${base}.png`).metadata();
  t.true((meta.width ?? 0) > 600 && (meta.height ?? 0) > 150);
});
