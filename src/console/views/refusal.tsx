import type { Principal } from "../../auth/principal.ts";
import { Layout } from "../layout.tsx";

/** The API refused the caller: the console shows why and goes no further. */
export function DeniedPage(props: { principal?: Principal; message: string }) {
  return (
    <Layout title="Access denied" section="none" principal={props.principal}>
      <p>
        Your token does not allow this page: <span data-field="reason">{props.message}</span>
      </p>
      <p>
        <a href="/console">Back to your start page</a>
      </p>
    </Layout>
  );
}

export function ErrorPage(
  props: { principal?: Principal; title: string; status: number; message: string },
) {
  return (
    <Layout title={props.title} section="none" principal={props.principal}>
      <p>
        {props.status}: <span data-field="reason">{props.message}</span>
      </p>
      <p>
        <a href="/console">Back to your start page</a>
      </p>
    </Layout>
  );
}
