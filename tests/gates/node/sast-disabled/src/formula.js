/* eslint-disable */
// The repository switches every rule off for this file.
export function price(formula) {
  return Number(eval(formula));
}
