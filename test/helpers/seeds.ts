// Seed lists from the environment for the longer fault runs (`npm run faults`): "1,5,9",
// ranges "1-20", or both ("1-10,42"). Anything else is an error, not a silently shorter run.

export function seedsFromEnv(name: string, fallback: string): number[] {
  const text = process.env[name] ?? fallback;
  const seeds: number[] = [];
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (m === null) throw new Error(`${name}: "${part}" is not a seed or a range a-b`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw new Error(`${name}: empty range ${part}`);
    for (let s = from; s <= to; s++) seeds.push(s);
  }
  return seeds;
}
