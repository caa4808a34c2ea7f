import assert from "node:assert/strict";
import OpenAI from "openai";

/** Runs `src/main.ts` as `deno task start` does, collecting coverage when the suite does. */
function spawnGateway(env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "src/main.ts"],
    env: { DENO_COVERAGE_DIR: "coverage", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function readUntil(stream: ReadableStream<Uint8Array>, marker: string) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  return { text, reader };
}

Deno.test("deno task start: prints URL, dev token and curl example that work", async () => {
  const dataDir = await Deno.makeTempDir();
  const child = spawnGateway({ PORT: "0", DATA_DIR: dataDir });
  try {
    const { text, reader } = await readUntil(child.stdout, "OpenAI SDK");
    const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)?.[1];
    assert.ok(url, text);
    const token = /Bearer ([\w-]+\.[\w-]+\.[\w-]+)/.exec(text)?.[1];
    assert.ok(token, "the banner's curl example carries the token");
    assert.match(text, /curl -s http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/);
    const secret = await Deno.readTextFile(`${dataDir}/jwt-secret`);
    assert.ok(secret.trim().length >= 43, "a dev secret was generated under DATA_DIR");

    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: token, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: "convergio-demo",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    let answer = "";
    for await (const chunk of stream) answer += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(answer, "Hello from the Convergio demo provider. You said: hi");
    reader.releaseLock();
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel();
    await Deno.remove(dataDir, { recursive: true });
    assert.equal(status.success, true, "SIGTERM shuts down cleanly");
  }
});

Deno.test("a bad config stops the boot with one message naming the field", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/gateway.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify({ providers: { openai: { protocol: "openai", base_url: "not a url" } } }),
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "src/main.ts"],
      env: { GATEWAY_CONFIG: file, DENO_COVERAGE_DIR: "coverage" },
    }).output();
    assert.equal(out.code, 1);
    const err = new TextDecoder().decode(out.stderr).trim();
    assert.equal(err.split("\n").length, 1, err);
    assert.match(err, /^config error: providers\.openai\.base_url: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
