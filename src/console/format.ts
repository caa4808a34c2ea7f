/** Number and time formats shared by the views: fixed locale and UTC, so pages read the same everywhere. */

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export const count = (n: number | null | undefined): string => n == null ? "–" : integer.format(n);

/** Dollars with cents, or four decimals under a dollar where cents hide small spends. */
export function usd(n: number | null | undefined): string {
  if (n == null) return "–";
  return `$${n.toFixed(Math.abs(n) < 1 && n !== 0 ? 4 : 2)}`;
}

export const percent = (fraction: number | null | undefined, digits = 1): string =>
  fraction == null ? "–" : `${(fraction * 100).toFixed(digits)} %`;

export const ms = (n: number | null | undefined): string =>
  n == null ? "–" : `${n < 10 ? n.toFixed(1) : integer.format(n)} ms`;

export const ratio = (n: number | null | undefined): string => n == null ? "–" : n.toFixed(2);

/** "2026-05-04 13:07 UTC" from an ISO timestamp or epoch milliseconds. */
export function utc(at: string | number): string {
  const iso = new Date(at).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}
