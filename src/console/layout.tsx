import type { Child } from "hono/jsx";
import { raw } from "hono/html";
import type { Principal } from "../auth/principal.ts";

/** Where a page sits in the navigation. */
export type Section =
  | "slo"
  | "latency"
  | "errors"
  | "spend"
  | "budgets"
  | "flags"
  | "mitigations"
  | "audit"
  | "tenant"
  | "none";

const OPERATOR: Array<[Section, string]> = [
  ["slo", "SLO status"],
  ["latency", "Latency"],
  ["errors", "Errors and providers"],
  ["spend", "Spend"],
  ["budgets", "Budgets"],
  ["flags", "Flags"],
  ["mitigations", "Mitigations"],
  ["audit", "Audit log"],
];

/** The console's sections this caller may open: the API would refuse the others. */
function navFor(p: Principal): Array<{ heading: string; links: Array<[Section, string]> }> {
  const groups = [];
  if (p.roles.includes("admin")) groups.push({ heading: "Operations", links: OPERATOR });
  if (p.roles.includes("admin") || p.roles.includes("tenant_admin")) {
    groups.push({
      heading: "Tenant",
      links: [["tenant", `Usage of ${p.tenant_id}`]] as Array<[Section, string]>,
    });
  }
  return groups;
}

/** Shared markup: skip link, header, navigation, one h1 per page. */
export function Layout(
  props: { title: string; section: Section; principal?: Principal; children?: Child },
) {
  const p = props.principal;
  return (
    <>
      {raw("<!doctype html>")}
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>{props.title} · Convergio console</title>
          <link rel="stylesheet" href="/console/assets/uplot.css" />
          <link rel="stylesheet" href="/console/assets/console.css" />
          <script src="/console/assets/uplot.js" defer></script>
          <script src="/console/assets/console.js" defer></script>
        </head>
        <body>
          <a class="skip-link" href="#main">Skip to main content</a>
          <header class="top">
            <a class="brand" href="/console">Convergio console</a>
            {p && (
              <>
                <p class="who">
                  {p.user_id} · tenant <span class="mono">{p.tenant_id}</span> ·{" "}
                  {p.roles.join(", ")}
                </p>
                <form method="post" action="/console/logout">
                  <button type="submit">Sign out</button>
                </form>
              </>
            )}
          </header>
          <div class="shell">
            {p && (
              <nav class="side" aria-label="Console sections">
                {navFor(p).map((g) => (
                  <>
                    <p class="nav-group" id={`nav-${g.heading.toLowerCase()}`}>{g.heading}</p>
                    <ul aria-labelledby={`nav-${g.heading.toLowerCase()}`}>
                      {g.links.map(([section, label]) => (
                        <li>
                          <a
                            href={`/console/${section}`}
                            aria-current={section === props.section ? "page" : undefined}
                          >
                            {label}
                          </a>
                        </li>
                      ))}
                    </ul>
                  </>
                ))}
              </nav>
            )}
            <main id="main" tabindex={-1} class={p ? undefined : "narrow"}>
              <h1>{props.title}</h1>
              {props.children}
            </main>
          </div>
        </body>
      </html>
    </>
  );
}
