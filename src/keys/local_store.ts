import { type MasterKeys, open, rewrap, seal } from "./envelope.ts";
import type { KeyStore } from "./keystore.ts";

/**
 * Envelope encryption with master keys from config; the envelope is kept in
 * the ledger. The keys load on first use: a process that never meets a
 * tenant key never needs them.
 */
export function createLocalKeyStore(loadMaster: () => Promise<MasterKeys>): KeyStore {
  let master: Promise<MasterKeys> | undefined;
  const keys = () => (master ??= loadMaster());
  return {
    kind: "local",
    store: async (ref, secret) => seal(await keys(), secret, ref),
    async load(ref, envelope) {
      if (!envelope) throw new Error(`no envelope for ${ref}`);
      return open(await keys(), envelope, ref);
    },
    remove: () => Promise.resolve(),
    rewrap: async (ref, envelope) => (envelope ? rewrap(await keys(), envelope, ref) : null),
  };
}
