import { Hono } from "hono";
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import consoleCss from "./assets/console.css" with { type: "text" };
import consoleJs from "./assets/console.js" with { type: "text" };
import { sha256Hex } from "../auth/hex.ts";

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";

/** Everything the pages load, from the module graph: no CDN, and `deno compile` embeds them. */
const FILES: Record<string, { body: string; type: string }> = {
  "uplot.js": { body: uplotJs, type: JS },
  "uplot.css": { body: uplotCss, type: CSS },
  "console.js": { body: consoleJs, type: JS },
  "console.css": { body: consoleCss, type: CSS },
};

const etags = new Map(
  await Promise.all(
    Object.entries(FILES).map(async ([name, f]) => {
      return [name, `"${(await sha256Hex(f.body)).slice(0, 32)}"`] as const;
    }),
  ),
);

/** `/assets/:file`: the console's scripts and styles, revalidated by ETag after an hour. */
export function assetRoutes() {
  const app = new Hono();
  app.get("/assets/:file", (c) => {
    const name = c.req.param("file");
    const file = Object.hasOwn(FILES, name) ? FILES[name] : undefined;
    if (!file) return c.text("not found", 404);
    const etag = etags.get(name)!;
    c.header("etag", etag);
    c.header("cache-control", "public, max-age=3600, must-revalidate");
    if (c.req.header("if-none-match") === etag) return c.body(null, 304);
    c.header("content-type", file.type);
    return c.body(file.body);
  });
  return app;
}
