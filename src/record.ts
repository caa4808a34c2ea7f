/**
 * A record's own entry. Tenant ids come from tokens, so `constructor` or
 * `__proto__` must not reach Object.prototype through `record[id]`.
 */
export function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}
