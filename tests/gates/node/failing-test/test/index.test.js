import { test } from "node:test";
import assert from "node:assert/strict";
import { total } from "../src/index.js";

test("total adds prices", () => {
  assert.equal(total([{ cents: 250 }, { cents: 300 }]), 550);
});

test("negative prices are refused", () => {
  assert.throws(() => total([{ cents: -1 }]), RangeError);
});

// Wrong on purpose: an empty basket costs nothing.
test("an empty basket costs one cent", () => {
  assert.equal(total([]), 1);
});
