import { startGateway } from "../support/gateway.ts";
import { FakeRealtime } from "./_fake_realtime.ts";
import { voiceConfig, WsClient } from "./_voice_support.ts";

Deno.test({ name: "probe", sanitizeOps: false, sanitizeResources: false, async fn() {
  let release!: () => void;
  const slow = new FakeRealtime({ holdUpgrade: new Promise<void>((r) => (release = r)) });
  const alt = new FakeRealtime();
  const gw = await startGateway(voiceConfig({
    realtime: { "rt-slow": { protocol: "realtime_openai", base_url: slow.url, api_key: slow.apiKey },
                "rt-alt": { protocol: "realtime_openai", base_url: alt.url, api_key: alt.apiKey } },
  }));
  const c = await WsClient.connect(gw, await gw.token({ mode: "managed" }));
  await c.nextOf("session.ready");
  c.send({ type: "voice.start", request_id: "v1", codec: "pcm16", sample_rate: 16000, mode: "push-to-talk" });
  await slow.until(() => slow.upgrades.length === 1, "hs");
  await c.close();
  await new Promise((r) => setTimeout(r, 500));
  console.log("events", gw.events.map((e) => [e.request_id, e.error_code, e.provider]));
  console.log("alt", alt.upgrades, alt.sockets.map((s) => s.readyState), alt.closes, alt.received.map(e=>e.type));
  console.log(await (await fetch(gw.url + "/metrics")).text().then(t => t.split("\n").filter(l => l.startsWith("convergio_provider")).join("\n")));
  release();
  await gw.close();
}});
