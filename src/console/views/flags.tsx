import { Notice } from "../components.tsx";
import type { View } from "../page.ts";
import type { FlagState } from "../../control/flags.ts";

/** What the view reads from `GET /admin/flags`. */
interface FlagsReply {
  flags: Record<string, FlagState>;
  version: string;
}

const show = (v: unknown) => JSON.stringify(v);

/** Words for the outcome of an action, by the `done` the action redirected with. */
const DONE: Record<string, string> = {
  promote: "promoted: its canary value is now the default",
  rollback: "rolled back: its canary is gone",
};

function CanaryActions(props: { name: string }) {
  const id = `reason-${props.name}`;
  return (
    <form class="inline" method="post" action={`/console/actions/flags/${props.name}/promote`}>
      <div class="field">
        <label for={id}>Reason for {props.name}</label>
        <input id={id} name="reason" required minlength={3} maxlength={500} size={28} />
      </div>
      <button type="submit">Promote canary</button>
      <button
        type="submit"
        class="danger"
        formaction={`/console/actions/flags/${props.name}/rollback`}
      >
        Roll back canary
      </button>
    </form>
  );
}

export const flagsView: View = async (ctx) => {
  const { flags, version } = await ctx.api.get<FlagsReply>("/admin/flags");
  const done = DONE[ctx.query("done") ?? ""];
  const flag = ctx.query("flag");
  return {
    title: "Flags",
    section: "flags",
    body: (
      <>
        <p class="lede">
          Every flag's default, per-tenant overrides, canary and kill switch (control snapshot{" "}
          <span class="mono">{version}</span>). Promoting makes the canary value the default;
          rolling back drops the canary. Both are audited with the reason you give.
        </p>
        {done && flag && Object.hasOwn(flags, flag) && (
          <Notice kind="good">
            <code>{flag}</code> {done}. <a href="/console/audit?action=flag.">See the audit log</a>.
          </Notice>
        )}
        <table id="flags-table">
          <caption class="visually-hidden">Feature flags</caption>
          <thead>
            <tr>
              <th scope="col">Flag</th>
              <th scope="col">Default</th>
              <th scope="col">Canary</th>
              <th scope="col">Overrides</th>
              <th scope="col">Kill switch</th>
              <th scope="col">Canary actions</th>
            </tr>
          </thead>
          <tbody>
            {Object.entries(flags).map(([name, s]) => (
              <tr data-flag={name}>
                <th scope="row">
                  <code>{name}</code>
                </th>
                <td>
                  <code>{show(s.default)}</code>
                </td>
                <td data-field="canary">
                  {s.canary
                    ? (
                      <>
                        <strong>{s.canary.percent} %</strong> of tenants get{" "}
                        <code>{show(s.canary.value)}</code>
                      </>
                    )
                    : "none"}
                </td>
                <td>
                  {Object.keys(s.overrides).length === 0 ? "none" : (
                    <ul>
                      {Object.entries(s.overrides).map(([tenant, v]) => (
                        <li>
                          <span class="mono">{tenant}</span>: <code>{show(v)}</code>
                        </li>
                      ))}
                    </ul>
                  )}
                </td>
                <td>
                  {s.killed ? <span class="badge block">killed</span> : "off"}
                </td>
                <td>{s.canary ? <CanaryActions name={name} /> : "no canary in progress"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </>
    ),
  };
};
