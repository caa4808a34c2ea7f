import assert from "node:assert/strict";
import {
  countAbove,
  describeVerdict,
  evaluate,
  explainBreach,
  quantileOf,
  type Rules,
  type Sample,
  SPEC_RULES,
  trim,
  windowOf,
} from "../../src/canary/signals.ts";

const MIN = 60_000;

function sample(at: number, c: Partial<Sample> = {}): Sample {
  return { at, requests: 0, errors: 0, chat: 0, slow: 0, slowOverMs: 800, ...c };
}

Deno.test("windowOf: the baseline is the newest sample a whole window older, else the oldest", () => {
  assert.equal(windowOf([], MIN), undefined);
  const h = [sample(0), sample(30_000), sample(60_000), sample(90_000)];
  const w = windowOf(h, MIN)!;
  assert.equal(w.full, true);
  assert.equal(w.from.at, 30_000);
  assert.equal(w.to.at, 90_000);
  assert.equal(w.spanMs, MIN);
  const partial = windowOf(h, 5 * MIN)!;
  assert.equal(partial.full, false);
  assert.equal(partial.from.at, 0);
  assert.equal(partial.spanMs, 90_000);
  // A baseline older than the window start is used as is (sampling is not exact).
  const sparse = windowOf([sample(0), sample(70_000)], MIN)!;
  assert.equal(sparse.full, true);
  assert.equal(sparse.spanMs, 70_000);
});

Deno.test("RB-1: 5xx share over the window above 2% breaches, at 2% it does not", () => {
  const rules: Rules = { ...SPEC_RULES, minRequests: 20 };
  const at = (n: number, errors: number) =>
    evaluate([sample(0), sample(5 * MIN, { requests: n, errors })], rules)[0];
  assert.equal(at(100, 2).state, "ok", "2% is the limit, not above it");
  assert.equal(at(100, 3).state, "breach");
  assert.equal(at(100, 3).ratio, 0.03);
  assert.equal(at(1000, 21).state, "breach");
  assert.equal(at(1000, 20).state, "ok");
  // Only the window counts: errors before its start do not.
  const h = [
    sample(0, { requests: 100, errors: 100 }),
    sample(MIN, { requests: 100, errors: 100 }),
    sample(6 * MIN, { requests: 200, errors: 101 }),
  ];
  const v = evaluate(h, rules)[0];
  assert.equal(v.state, "ok");
  assert.deepEqual([v.bad, v.total, v.spanMs], [1, 100, 5 * MIN]);
});

Deno.test("RB-1 judges nothing before a whole window, nor on too few requests", () => {
  const rules = { ...SPEC_RULES, minRequests: 20 };
  const warming = evaluate([sample(0), sample(4 * MIN, { requests: 100, errors: 100 })], rules)[0];
  assert.equal(warming.state, "warming", "5xx > 2% *for 5 min*: 4 min are not enough");
  assert.equal(warming.ratio, 1);
  const few = evaluate([sample(0), sample(5 * MIN, { requests: 19, errors: 19 })], rules)[0];
  assert.equal(few.state, "no_data");
  const none = evaluate([sample(0), sample(5 * MIN)], { ...rules, minRequests: 1 })[0];
  assert.equal(none.state, "no_data");
  assert.equal(none.ratio, null);
  assert.equal(evaluate([], rules)[0].state, "warming");
});

Deno.test("RB-2: P95 > SLO is more than 5% of non-streamed chat slower than the SLO", () => {
  const rules = { ...SPEC_RULES, minRequests: 20 };
  const at = (chat: number, slow: number) =>
    evaluate([sample(0), sample(10 * MIN, { chat, slow })], rules)[1];
  assert.equal(at(100, 5).state, "ok", "5 of 100 over 800 ms: P95 is still ≤ 800 ms");
  assert.equal(at(20, 1).state, "ok");
  assert.equal(at(100, 6).state, "breach");
  assert.equal(at(100, 6).sloMs, 800);
  assert.ok(Math.abs(at(100, 6).threshold - 0.05) < 1e-12);
  // Its own window: 10 minutes, so 5 are still warming.
  const w = evaluate([sample(0), sample(5 * MIN, { chat: 100, slow: 100 })], rules)[1];
  assert.equal(w.state, "warming");
  // A stricter quantile lowers the share allowed.
  const p99 = evaluate([sample(0), sample(10 * MIN, { chat: 100, slow: 2 })], {
    ...rules,
    latency: { windowMs: 10 * MIN, quantile: 0.99 },
  })[1];
  assert.equal(p99.state, "breach");
});

Deno.test("RB-2 estimates the quantile from histogram deltas, as histogram_quantile does", () => {
  const b = (
    counts: number[],
  ): Array<[number, number]> => [[100, counts[0]], [800, counts[1]], [1000, counts[2]], [
    Infinity,
    counts[3],
  ]];
  const history = [
    sample(0, { chat: 100, buckets: b([100, 100, 100, 100]) }),
    sample(10 * MIN, { chat: 200, slow: 10, buckets: b([100, 190, 200, 200]) }),
  ];
  const v = evaluate(history, { ...SPEC_RULES, minRequests: 1 })[1];
  // Window: 90 in (100, 800], 10 in (800, 1000]; rank 95 lies halfway through the slow bucket.
  assert.equal(v.state, "breach");
  assert.equal(v.quantileMs, 900);
  assert.match(describeVerdict(v), /P95≈900ms/);
});

Deno.test("quantileOf and countAbove on cumulative buckets", () => {
  const buckets: Array<[number, number]> = [[100, 50], [800, 90], [1000, 100], [Infinity, 100]];
  assert.equal(quantileOf(buckets, 0.5), 100);
  assert.equal(quantileOf(buckets, 0.25), 50);
  assert.equal(quantileOf(buckets, 0.95), 900);
  assert.equal(quantileOf([[100, 0], [Infinity, 0]], 0.95), null);
  assert.equal(quantileOf([[100, 1], [Infinity, 10]], 0.95), 100, "open bucket: highest bound");
  assert.equal(quantileOf([[100, 5], [200, 5], [Infinity, 5]], 1), 100);
  assert.equal(countAbove(buckets, 800), 10, "exact on a bucket bound");
  assert.equal(countAbove(buckets, 900), 5, "linear within a bucket");
  assert.equal(countAbove(buckets, 50), 75);
  assert.equal(
    countAbove([[100, 5], [Infinity, 8]], 5000),
    3,
    "above every bound: the open bucket",
  );
  assert.equal(countAbove([], 800), 0);
});

Deno.test("trim keeps the longest window's baseline and what follows", () => {
  const h = [0, 10, 20, 30, 40, 50].map((s) => sample(s * 1000));
  assert.deepEqual(trim(h, 25_000).map((s) => s.at), [20_000, 30_000, 40_000, 50_000]);
  assert.deepEqual(trim(h, 60_000).map((s) => s.at), h.map((s) => s.at));
  assert.deepEqual(trim([], 1), []);
});

Deno.test("verdicts read as the runbooks say them", () => {
  const rules = { ...SPEC_RULES, minRequests: 1 };
  const [rb1, rb2] = evaluate([
    sample(0),
    sample(10 * MIN, { requests: 40, errors: 15, chat: 25, slow: 5 }),
  ], rules);
  assert.equal(
    explainBreach(rb1),
    "RB-1: 5xx ratio 37.5% (15 of 40 requests) over the last 300s > 2.0%",
  );
  assert.match(
    explainBreach(rb2),
    /^RB-2: 20\.0% of non-streamed chat requests \(5 of 25\) slower than 800 ms over the last 600s, so P95 > SLO/,
  );
  assert.equal(describeVerdict(rb1), "RB-1 5xx 37.5% (15/40) over 300s, limit 2.0%: breach");
  const [warm] = evaluate([sample(0), sample(90_000)], rules);
  assert.equal(describeVerdict(warm), "RB-1 5xx n/a (0/0) over 300s, limit 2.0%: warming 90s/300s");
  const [few] = evaluate([sample(0), sample(5 * MIN, { requests: 3 })], {
    ...rules,
    minRequests: 5,
  });
  assert.match(describeVerdict(few), /too few requests to judge$/);
});
