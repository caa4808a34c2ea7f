import assert from "node:assert/strict";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";

/** Debian's Chromium, headless, with nothing reaching out to the network on its own. */
export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

// Functions passed to page.evaluate run in the page, where these exist; Deno has no DOM types.
// deno-lint-ignore no-explicit-any
declare const document: any, getComputedStyle: any, NodeFilter: any;
type El = { parentElement: El | null; textContent: string | null };

export const VIEWPORT = { width: 1280, height: 800 };

export interface Tab {
  context: BrowserContext;
  page: Page;
  /** Script errors and Content-Security-Policy violations the page reported. */
  errors: string[];
  close(): Promise<void>;
}

/** A fresh context (its own cookies) and page; closing it fails on any error the page reported. */
export async function openTab(browser: Browser): Promise<Tab> {
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(`script error on ${page.url()}: ${err.message}`));
  page.on("console", (msg) => {
    // A refused page (401, 403) is logged as a failed load; those visits are the point.
    if (msg.type() === "error" && !/status of 4\d\d/.test(msg.text())) {
      errors.push(`console error on ${page.url()}: ${msg.text()}`);
    }
  });
  return {
    context,
    page,
    errors,
    async close() {
      await context.close();
      assert.deepEqual(errors, []);
    },
  };
}

export async function signIn(
  page: Page,
  base: string,
  credential: { apiKey: string } | { token: string },
) {
  await page.goto(`${base}/console/login`);
  if ("apiKey" in credential) await page.getByLabel("API key").fill(credential.apiKey);
  else await page.getByLabel("Or a JWT").fill(credential.token);
  await Promise.all([
    page.waitForURL((url) => !url.pathname.endsWith("/login")),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
}

const SHOTS = new URL("../../docs/screenshots/", import.meta.url);

/**
 * The viewport as docs/screenshots/<name>.png, for the README, when
 * CVG_SCREENSHOTS is set: the images hold dates, so every run would change them.
 */
export async function screenshot(page: Page, name: string) {
  if (!Deno.env.get("CVG_SCREENSHOTS")) return;
  await page.evaluate(() => document.fonts.ready);
  await page.screenshot({ path: decodeURIComponent(new URL(`${name}.png`, SHOTS).pathname) });
}

/** Waits until console.js has drawn every chart of the page with uPlot. */
export async function chartsDrawn(page: Page, expected: number) {
  await page.waitForFunction(
    (n) => document.querySelectorAll("[data-chart] .uplot canvas").length === n,
    expected,
  );
}

/** A table's body as rows of trimmed cell texts (hidden ones too, as in a closed <details>). */
export function tableRows(page: Page, selector: string): Promise<string[][]> {
  return page.locator(`${selector} tbody tr`).evaluateAll((rows) =>
    rows.map((r) => [...r.children].map((c) => (c.textContent ?? "").trim()))
  );
}

/**
 * Accessibility basics of the page: one h1, a label for every form field,
 * scoped header cells, and WCAG AA contrast for every visible text.
 */
export async function assertAccessible(page: Page) {
  const report = await page.evaluate(() => {
    const problems: string[] = [];
    const h1 = document.querySelectorAll("h1").length;
    if (h1 !== 1) problems.push(`${h1} h1 elements`);
    for (
      const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")
    ) {
      if (!el.labels?.length && !el.getAttribute("aria-label")) {
        problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name}`);
      }
    }
    for (const th of document.querySelectorAll("th:not([scope])")) {
      problems.push(`th without scope: ${th.textContent}`);
    }
    if (!document.querySelector("main#main") || !document.querySelector("a.skip-link")) {
      problems.push("no skip link to main");
    }
    const rgb = (css: string) => {
      const [r, g, b, a = 1] = (css.match(/[\d.]+/g) ?? []).map(Number);
      return { r, g, b, a };
    };
    const luminance = ({ r, g, b }: { r: number; g: number; b: number }) => {
      const lin = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const background = (el: El | null) => {
      for (; el; el = el.parentElement) {
        const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.a > 0) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || !n.textContent?.trim() || !el.getClientRects().length) continue;
      if (el.closest("script, .skip-link")) continue;
      const style = getComputedStyle(el);
      if (style.visibility === "hidden") continue;
      const fg = luminance(rgb(style.color));
      const bg = luminance(background(el));
      const contrast = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (contrast < (large ? 3 : 4.5)) {
        problems.push(`contrast ${contrast.toFixed(2)} for "${n.textContent.trim().slice(0, 30)}"`);
      }
    }
    return problems;
  });
  assert.deepEqual(report, [], `accessibility problems on ${page.url()}`);
}

/** Presses Tab from a freshly loaded page until `selector` has focus; returns the presses. */
export async function tabTo(page: Page, selector: string, max = 40): Promise<number> {
  for (let i = 1; i <= max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) {
      return i;
    }
  }
  return assert.fail(`Tab never reached ${selector} on ${page.url()}`);
}
