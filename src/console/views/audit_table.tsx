import { EmptyRow } from "../components.tsx";
import { utc } from "../format.ts";

import type { AuditRow } from "../../control/audit.ts";

/** Audit rows, newest first, with each change's before and after on demand. */
export function AuditTable(props: { id: string; caption: string; rows: AuditRow[] }) {
  return (
    <table id={props.id}>
      <caption class="visually-hidden">{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col">#</th>
          <th scope="col">When</th>
          <th scope="col">Actor</th>
          <th scope="col">Action</th>
          <th scope="col">Target</th>
          <th scope="col">Reason</th>
          <th scope="col">Change</th>
        </tr>
      </thead>
      <tbody>
        {props.rows.length === 0
          ? <EmptyRow columns={7}>No entries.</EmptyRow>
          : props.rows.map((r) => (
            <tr data-action={r.action}>
              <th scope="row">{r.id}</th>
              <td class="nowrap">{utc(r.at)}</td>
              <td class="nowrap">
                {r.actor}
                {r.actor_tenant && <span class="mono">{` (${r.actor_tenant})`}</span>}
              </td>
              <td>
                <code>{r.action}</code>
              </td>
              <td>
                <span class="mono">{r.target}</span>
              </td>
              <td>{r.reason ?? "–"}</td>
              <td>
                <details>
                  <summary>
                    Show <span class="visually-hidden">before and after of #{r.id}</span>
                  </summary>
                  <pre>{JSON.stringify({ before: r.before, after: r.after }, null, 1)}</pre>
                  <p class="hint">
                    Request <span class="mono">{r.request_id ?? "–"}</span>, hash{" "}
                    <span class="mono">{r.hash.slice(0, 16)}…</span>
                  </p>
                </details>
              </td>
            </tr>
          ))}
      </tbody>
    </table>
  );
}
