/**
 * The floor of the side-by-side benchmark: a bare `Deno.serve` pass-through
 * proxy. It forwards method, path, headers and body to the upstream with
 * `fetch` and returns the upstream's body streamed as is: no auth, no parsing,
 * no metering. Whatever a gateway costs beyond this is its own work.
 *   FLOOR_UPSTREAM (http://127.0.0.1:9100), FLOOR_PORT (0: any free port)
 * Loopback only: it listens on 127.0.0.1 and refuses a non-loopback upstream.
 */

/** Hop-by-hop headers (and Host, which names this proxy) are not forwarded. */
const HOP_BY_HOP = [
  "host",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
];

export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function startFloorProxy(
  opts: { upstream: string; port: number },
): Deno.HttpServer<Deno.NetAddr> {
  if (!isLoopbackUrl(opts.upstream)) {
    throw new Error(`floor proxy: refusing non-loopback upstream ${opts.upstream}`);
  }
  const upstream = opts.upstream.replace(/\/$/, "");
  return Deno.serve(
    { hostname: "127.0.0.1", port: opts.port, onListen() {} },
    async (req) => {
      const url = new URL(req.url);
      const headers = new Headers(req.headers);
      for (const name of HOP_BY_HOP) headers.delete(name);
      const res = await fetch(`${upstream}${url.pathname}${url.search}`, {
        method: req.method,
        headers,
        body: req.body,
        redirect: "manual",
      });
      return new Response(res.body, { status: res.status, headers: res.headers });
    },
  );
}

if (import.meta.main) {
  const server = startFloorProxy({
    upstream: Deno.env.get("FLOOR_UPSTREAM") ?? "http://127.0.0.1:9100",
    port: Number(Deno.env.get("FLOOR_PORT") ?? 0),
  });
  console.log(`floor proxy on http://127.0.0.1:${server.addr.port}`);
}
