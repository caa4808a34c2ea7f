import assert from "node:assert/strict";
import { createMetrics } from "../../src/obs/metrics.ts";

Deno.test("a scrape reports the process's memory by kind", async () => {
  const text = await createMetrics().registry.metrics();
  const value = (kind: string) =>
    Number(
      new RegExp(`^convergio_process_memory_bytes\\{kind="${kind}"\\} (\\d+)$`, "m")
        .exec(text)?.[1],
    );
  const [rss, total, used, external] = ["rss", "heap_total", "heap_used", "external"].map(value);
  assert.ok(rss > 0 && used > 0 && external >= 0, text);
  assert.ok(used <= total && total < rss, `${used} <= ${total} < ${rss}`);
});

Deno.test("with observability off the memory gauge is not exported", async () => {
  const text = await createMetrics({ enabled: false }).registry.metrics();
  assert.doesNotMatch(text, /convergio_process_memory_bytes/);
});
