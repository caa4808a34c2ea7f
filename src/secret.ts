const REDACTED = "[redacted]";

/**
 * A credential that cannot leak by accident: JSON, string and inspect
 * conversions all print a placeholder. Only `reveal()` gives the value, and it
 * is called at the one place the value goes on the wire.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.for("Deno.customInspect")](): string {
    return REDACTED;
  }
}
