// Sales reports; no test imports this module.
export function summary(totals) {
  if (totals.length === 0) {
    return { count: 0, sum: 0, min: 0, max: 0 };
  }
  let min = totals[0];
  let max = totals[0];
  let sum = 0;
  for (const t of totals) {
    if (t < min) {
      min = t;
    }
    if (t > max) {
      max = t;
    }
    sum += t;
  }
  return { count: totals.length, sum, min, max };
}

export function best(totals) {
  if (totals.length === 0) {
    throw new RangeError("no totals");
  }
  return summary(totals).max;
}
