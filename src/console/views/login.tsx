import { Notice } from "../components.tsx";
import { Layout } from "../layout.tsx";

/** Sign-in with an API key (exchanged for a short-lived JWT) or a JWT pasted as is. */
export function LoginPage(props: { next: string; error?: string }) {
  return (
    <Layout title="Sign in" section="none">
      <p class="lede">
        Operators and tenant admins sign in with an API key, or paste a token from{" "}
        <code>deno task token</code> or{" "}
        <code>POST /v1/auth/login</code>. The console then acts with exactly that token's roles and
        tenant.
      </p>
      {props.error && <Notice kind="bad">{props.error}</Notice>}
      <form class="stacked" method="post" action="/console/login">
        <input type="hidden" name="next" value={props.next} />
        <div class="field">
          <label for="api-key">API key</label>
          <input
            id="api-key"
            name="api_key"
            type="password"
            autocomplete="off"
            aria-describedby="api-key-hint"
          />
          <p class="hint" id="api-key-hint">
            Starts with{" "}
            <code>cvg_</code>. The console exchanges it for a short-lived token and keeps only that.
          </p>
        </div>
        <div class="field">
          <label for="token">Or a JWT</label>
          <textarea id="token" name="token" spellcheck={false} autocomplete="off"></textarea>
        </div>
        <button type="submit">Sign in</button>
      </form>
    </Layout>
  );
}
