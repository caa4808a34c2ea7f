/**
 * Bounds the tenant label of per-tenant metrics: the top `n` tenants by
 * today's spend get their own label, every other tenant is "other". Only
 * today's running totals are kept, and they reset at UTC midnight, so memory
 * and series count stay bounded by `n` per day however many tenants exist.
 */
export class TenantLabels {
  #day = "";
  #spend = new Map<string, number>();
  #labelled = new Set<string>();

  constructor(private readonly n: number, private readonly now: () => number) {}

  #rollover(): string[] {
    const day = new Date(this.now()).toISOString().slice(0, 10);
    if (day === this.#day) return [];
    this.#day = day;
    this.#spend.clear();
    const dropped = [...this.#labelled];
    this.#labelled.clear();
    return dropped;
  }

  /**
   * Adds spend and returns the label to use, plus labels that just lost their
   * place (their series can be removed).
   */
  label(tenant: string, usd = 0): { label: string; dropped: string[] } {
    const dropped = this.#rollover();
    const total = (this.#spend.get(tenant) ?? 0) + usd;
    this.#spend.set(tenant, total);
    if (this.#labelled.has(tenant)) return { label: tenant, dropped };
    if (this.#labelled.size < this.n) {
      this.#labelled.add(tenant);
      return { label: tenant, dropped };
    }
    // Take the place of the smallest labelled tenant when this one outspends it.
    let smallest: string | undefined;
    for (const t of this.#labelled) {
      if (smallest === undefined || this.#spend.get(t)! < this.#spend.get(smallest)!) smallest = t;
    }
    if (smallest !== undefined && total > this.#spend.get(smallest)!) {
      this.#labelled.delete(smallest);
      this.#labelled.add(tenant);
      return { label: tenant, dropped: [...dropped, smallest] };
    }
    return { label: "other", dropped };
  }
}
