// Baskets of priced items, in cents.
export function total(items) {
  let sum = 0;
  let unusedCount = 0;
  for (const item of items) {
    if (item.cents < 0) {
      throw new RangeError("a price is never negative");
    }
    sum += item.cents;
  }
  return sum;
}
