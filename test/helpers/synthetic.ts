// Seeded synthetic images with structure a masked autoencoder can learn: oriented colour
// gratings (a few random frequencies, phases and colours per image), values roughly in [-1, 1].
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';

export function seededUniform(seed: number): () => number {
  const rng = xoroshiro128plus(seed);
  return () => uniformFloat64(rng);
}

export function gratings(count: number, channels: number, size: number, seed: number): Float32Array {
  const rand = seededUniform(seed);
  const out = new Float32Array(count * channels * size * size);
  for (let b = 0; b < count; b++) {
    const fx = 0.5 + 2 * rand(), fy = 0.5 + 2 * rand(), phase = 2 * Math.PI * rand();
    const colour = Array.from({ length: channels }, () => 0.5 + 0.5 * rand());
    const offset = Array.from({ length: channels }, () => rand() - 0.5);
    for (let c = 0; c < channels; c++)
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++) {
          const v = Math.sin((2 * Math.PI * (fx * x + fy * y)) / size + phase);
          out[((b * channels + c) * size + y) * size + x] = colour[c] * v + offset[c];
        }
  }
  return out;
}
