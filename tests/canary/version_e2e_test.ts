/**
 * The gateway version canary end to end: real gateway processes (role all,
 * Postgres), a real nginx in front, client traffic through nginx, and
 * scripts/canary.ts rewriting nginx's upstream file and reloading it. A
 * broken canary (its demo provider always fails) must be rolled back; a
 * healthy one promoted. Windows are seconds long; waits are bounded, and no
 * assertion is about how long anything took.
 *
 * Needs nginx (Debian: `apt-get install -y nginx`) and the test Postgres.
 */
import assert from "node:assert/strict";
import { DEFAULT_UPSTREAM, parseWeights, renderUpstream } from "../../src/canary/upstream.ts";
import {
  canaryCli,
  chat,
  FAST,
  type Gateway,
  gatewayConfig,
  type Nginx,
  sloTotals,
  startGateway,
  startLoad,
  startNginx,
  token,
  waitFor,
} from "./_support.ts";

function versionArgs(nginx: Nginx, stable: Gateway, canary: Gateway, steps: string): string[] {
  return [
    "version",
    `--stable=${stable.hostPort}`,
    `--canary=${canary.hostPort}`,
    `--upstream-file=${nginx.upstreamFile}`,
    `--nginx-conf=${nginx.conf}`,
    `--nginx-bin=${nginx.bin}`,
    `--steps=${steps}`,
    ...FAST,
  ];
}

/**
 * Once nginx answers `n` requests in a row with 200 (a reload takes effect
 * when the new workers are up), then: `count` more, their statuses.
 */
/** Waits until nginx's old workers are gone: ten requests in a row answered by the new upstream. */
async function settled(base: string, user: string): Promise<void> {
  await waitFor("nginx to serve every request from the new upstream", async () => {
    for (let i = 0; i < 10; i++) if ((await chat(base, user)) !== 200) return false;
    return true;
  });
}

async function settledStatuses(base: string, user: string, count: number): Promise<number[]> {
  await settled(base, user);
  const statuses: number[] = [];
  for (let i = 0; i < count; i++) statuses.push(await chat(base, user));
  return statuses;
}

Deno.test("version canary through a real nginx: a broken canary is rolled back, a healthy one promoted, Ctrl-C rolls back", async (t) => {
  const secret = crypto.randomUUID() + crypto.randomUUID();
  const started = await Promise.allSettled([
    startGateway(gatewayConfig(), secret),
    startGateway(
      gatewayConfig({ providers: { demo: { protocol: "mock", fail: "unavailable" } } }),
      secret,
    ),
    startGateway(gatewayConfig(), secret),
  ]);
  const gateways = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  let nginx: Nginx | undefined;
  try {
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const [stable, broken, healthy] = gateways;
    const spec = { ...DEFAULT_UPSTREAM, stable: stable.hostPort, canary: broken.hostPort };
    nginx = await startNginx(renderUpstream(spec, 0, "before the rollout"));
    const admin = await token(secret, "ops", true);
    const users = await Promise.all(["t1", "t2", "t3"].map((t) => token(secret, t)));
    const env = { CONVERGIO_ADMIN_TOKEN: admin };

    await t.step("a canary failing every chat breaches RB-1 and is rolled back", async () => {
      assert.ok((await chat(broken.url, users[0])) >= 500, "the canary is broken");
      assert.equal(await chat(nginx!.base, users[0]), 200, "nginx serves the stable");
      const load = startLoad(nginx!.base, users, 2, 100);
      let res;
      try {
        res = await canaryCli(
          [...versionArgs(nginx!, stable, broken, "50,100"), "--step-seconds=5"],
          env,
        );
      } finally {
        await load.stop();
      }
      const output = `${res.stdout}\n${res.stderr}\nnginx: ${await nginx!.errorLog()}`;
      assert.equal(res.code, 1, output);
      assert.match(
        res.stdout,
        /^step 1\/2: canary at 50%: wrote .* \(stable weight 1, canary weight 1\), nginx -t ok, reloaded$/m,
      );
      assert.match(
        res.stdout,
        /^ROLLBACK: RB-1: 5xx ratio \d+\.\d% \(\d+ of \d+ requests\) over the last 1\.5s > 2\.0% on the canary$/m,
      );
      assert.match(res.stdout, /^result: ROLLED BACK \(exit 1\)$/m);
      assert.match(res.stderr, /^canary: rolled back: RB-1/m);
      assert.doesNotMatch(res.stdout, /step 2\/2|PROMOTED/);

      // The canary is out of the upstream file nginx was reloaded with.
      const upstream = await Deno.readTextFile(nginx!.upstreamFile);
      assert.deepEqual(parseWeights(upstream), { [stable.hostPort]: 1 });
      assert.match(upstream, /rolled back \(RB-1/);
      // The breakage was real: the canary served through nginx and clients saw its 5xx.
      // Read once nginx has settled, so no request still in an old worker counts later.
      await settled(nginx!.base, users[1]);
      const canarySeen = await sloTotals(broken.url, admin);
      assert.ok(
        canarySeen.total > 0 && canarySeen.bad === canarySeen.total,
        JSON.stringify(canarySeen),
      );
      const fivexx = [...load.statuses].filter(([s]) => s >= 500).reduce((n, [, c]) => n + c, 0);
      assert.ok(fivexx > 0, JSON.stringify([...load.statuses]));

      // After the rollback every request through nginx succeeds, and none reaches the canary.
      const statuses = await settledStatuses(nginx!.base, users[1], 30);
      assert.deepEqual(statuses, Array(30).fill(200));
      assert.deepEqual(await sloTotals(broken.url, admin), canarySeen);
    });

    await t.step("a healthy canary passes every step and is promoted", async () => {
      await nginx!.setUpstream(
        renderUpstream({ ...spec, canary: healthy.hostPort }, 0, "before the rollout"),
      );
      const load = startLoad(nginx!.base, users, 2, 100);
      let res;
      try {
        res = await canaryCli(
          [...versionArgs(nginx!, stable, healthy, "50,100"), "--step-seconds=2"],
          env,
        );
      } finally {
        await load.stop();
      }
      assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stdout, /^step 2\/2: 100% healthy$/m);
      assert.match(res.stdout, /^result: PROMOTED \(exit 0\)$/m);
      assert.deepEqual([...load.statuses.keys()], [200], JSON.stringify([...load.statuses]));
      const upstream = await Deno.readTextFile(nginx!.upstreamFile);
      assert.deepEqual(parseWeights(upstream), { [healthy.hostPort]: 1 });
      assert.match(upstream, /: promoted\./);

      // All traffic on the new version now: the stable gets none.
      const stableBefore = await sloTotals(stable.url, admin);
      const canaryBefore = await sloTotals(healthy.url, admin);
      assert.deepEqual(await settledStatuses(nginx!.base, users[2], 20), Array(20).fill(200));
      const stableAfter = await sloTotals(stable.url, admin);
      const canaryAfter = await sloTotals(healthy.url, admin);
      assert.ok(canaryAfter.total >= canaryBefore.total + 20);
      assert.equal(stableAfter.total, stableBefore.total);
    });

    await t.step("Ctrl-C mid-rollout rolls back before exiting", async () => {
      await nginx!.setUpstream(renderUpstream(spec, 0, "before the rollout"));
      const res = await canaryCli(
        [...versionArgs(nginx!, stable, healthy, "25,100"), "--step-seconds=600"],
        env,
        { interrupt: { when: /^step 1\/2: canary at 25%/m, signal: "SIGINT" } },
      );
      assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stdout, /^ROLLBACK: interrupted by the operator$/m);
      assert.deepEqual(parseWeights(await Deno.readTextFile(nginx!.upstreamFile)), {
        [stable.hostPort]: 1,
      });
    });
  } finally {
    await nginx?.stop();
    await Promise.all(gateways.map((g) => g.stop()));
  }
});
