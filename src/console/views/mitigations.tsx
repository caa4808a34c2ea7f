import { utc } from "../format.ts";
import type { View } from "../page.ts";
import type { AuditRow } from "../../control/audit.ts";
import type { MitigationState } from "../../control/mitigations.ts";
import { AuditTable } from "./audit_table.tsx";

/** What the view reads from `GET /admin/mitigations`. */
interface MitigationsReply {
  mitigations: Record<string, { runbook: string; active: MitigationState | null }>;
}

/** The edges whose autopilot holds a mitigation, by the start of their ids. */
function HeldBy(props: { sources: string[] }) {
  return (
    <>
      autopilot on {props.sources.length === 1 ? "edge" : "edges"}{" "}
      <span class="mono" title={props.sources.join(", ")}>
        {props.sources.map((s) => s.slice(0, 8)).join(", ")}
      </span>
    </>
  );
}

export const mitigationsView: View = async ({ api }) => {
  const [{ mitigations }, { entries }] = await Promise.all([
    api.get<MitigationsReply>("/admin/mitigations"),
    api.get<{ entries: AuditRow[] }>("/admin/audit?actor=autopilot&limit=50"),
  ]);
  const all = Object.entries(mitigations);
  const active = all.filter(([, m]) => m.active);
  const rows = [...active, ...all.filter(([, m]) => !m.active)];
  return {
    title: "Mitigations",
    section: "mitigations",
    body: (
      <>
        <p class="lede">
          Runbook mitigations in force (first), whoever applied them, and what the autopilot did
          lately. {active.length} of {all.length} mitigations are active.
        </p>
        <h2>Mitigations</h2>
        <table id="mitigations-table">
          <caption class="visually-hidden">Runbook mitigations and their state</caption>
          <thead>
            <tr>
              <th scope="col">Mitigation</th>
              <th scope="col">Runbook</th>
              <th scope="col">State</th>
              <th scope="col">Since</th>
              <th scope="col">Applied by</th>
              <th scope="col">Parameters</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(([name, m]) => (
              <tr data-mitigation={name} data-active={m.active ? "true" : "false"}>
                <th scope="row">
                  <code>{name}</code>
                </th>
                <td>{m.runbook}</td>
                <td>
                  {m.active
                    ? <span class="badge block">active</span>
                    : <span class="badge">inactive</span>}
                </td>
                <td class="nowrap">{m.active ? utc(m.active.since) : "–"}</td>
                <td>
                  {m.active
                    ? m.active.sources.length
                      ? <HeldBy sources={m.active.sources} />
                      : m.active.actor
                    : "–"}
                </td>
                <td>
                  {m.active && Object.keys(m.active.params).length
                    ? <code>{JSON.stringify(m.active.params)}</code>
                    : "–"}
                </td>
                <td>{m.active?.reason ?? "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <h2>Autopilot actions</h2>
        <AuditTable id="autopilot-table" caption="Audit entries by the autopilot" rows={entries} />
      </>
    ),
  };
};
