import { base64url } from "jose";

/**
 * The development HS256 secret: generated once, kept under the data folder
 * with owner-only permissions, so tokens survive restarts without setup.
 */
export async function loadOrCreateDevSecret(
  dataDir: string,
  name = "jwt-secret",
): Promise<Uint8Array> {
  const path = `${dataDir}/${name}`;
  try {
    return base64url.decode((await Deno.readTextFile(path)).trim());
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const secret = crypto.getRandomValues(new Uint8Array(32));
  await Deno.mkdir(dataDir, { recursive: true });
  await Deno.writeTextFile(path, base64url.encode(secret) + "\n", { mode: 0o600, createNew: true })
    .catch((err) => {
      // Another process won the race to create it: use theirs.
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
  return base64url.decode((await Deno.readTextFile(path)).trim());
}

/** The HS256 key for tokens the gateway signs: JWT_SECRET, or the generated dev secret. */
export function signingSecret(
  auth: { jwt_secret?: { reveal(): string } },
  dataDir: string,
): Promise<Uint8Array> {
  return auth.jwt_secret
    ? Promise.resolve(new TextEncoder().encode(auth.jwt_secret.reveal()))
    : loadOrCreateDevSecret(dataDir);
}
