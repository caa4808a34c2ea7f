import { base64url } from "jose";
import { loadOrCreateDevSecret } from "../auth/dev_secret.ts";
import { type Config, ConfigError } from "../config.ts";
import { createAzureKeyVaultStore } from "./azure_key_vault.ts";
import { MasterKeys } from "./envelope.ts";
import type { KeyStore } from "./keystore.ts";
import { createLocalKeyStore } from "./local_store.ts";

/**
 * The configured key store. Without master keys, a local store uses one
 * generated under data_dir: fine for one process, but every edge must share
 * the aggregator's keys (`BYOK_MASTER_KEYS`) to open what it seals.
 */
export async function keyStoreFromConfig(config: Config): Promise<KeyStore> {
  const b = config.byok;
  if (b.store === "azure_key_vault") return createAzureKeyVaultStore(b.azure!);
  if (b.master_keys) {
    // Configured keys are checked at boot: a bad one stops the start, not a later admin call.
    const master = await MasterKeys.parse(b.master_keys.reveal()).catch((err) => {
      throw new ConfigError(`config error: byok.master_keys: ${(err as Error).message}`);
    });
    return createLocalKeyStore(() => Promise.resolve(master));
  }
  return createLocalKeyStore(async () =>
    MasterKeys.parse(
      `v1:${base64url.encode(await loadOrCreateDevSecret(config.data_dir, "byok-master-key"))}`,
    )
  );
}
