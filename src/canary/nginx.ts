/**
 * Moves requests between the stable and the canary gateway through nginx:
 * write the weighted upstream file, `nginx -t`, reload. A file nginx refuses
 * (or a failed reload) is put back as it was, so the file on disk always
 * matches what nginx runs.
 */
import { dirname } from "node:path";
import type { TrafficSwitch } from "./rollout.ts";
import { renderUpstream, type UpstreamSpec, weightsFor } from "./upstream.ts";

export interface CommandResult {
  code: number;
  output: string;
}
export type RunCommand = (argv: string[]) => Promise<CommandResult>;

export interface Files {
  /** The file's text, or undefined when there is none. */
  read(path: string): Promise<string | undefined>;
  /** Replaces the file as a whole (write beside it, then rename: nginx never reads half a file). */
  write(path: string, text: string): Promise<void>;
  remove(path: string): Promise<void>;
  /** Throws when a file cannot be created beside `path`. */
  writable(path: string): Promise<void>;
}

export interface NginxOptions {
  upstream: UpstreamSpec;
  /** The upstream file nginx.conf includes. */
  file: string;
  /** When given: `nginx -t -c <conf>` before each reload, and `-c <conf>` on the reload. */
  conf?: string;
  bin: string;
  /** Replaces `nginx -s reload` (e.g. `systemctl reload nginx`). */
  reloadCmd?: string[];
}

export function reloadArgv(o: NginxOptions): string[] {
  return o.reloadCmd ?? [o.bin, "-s", "reload", ...(o.conf ? ["-c", o.conf] : [])];
}

export function validateArgv(o: NginxOptions): string[] | undefined {
  return o.conf ? [o.bin, "-t", "-c", o.conf] : undefined;
}

export class NginxSwitch implements TrafficSwitch {
  constructor(
    private readonly o: NginxOptions,
    private readonly run: RunCommand,
    private readonly files: Files,
  ) {}

  describe(): string[] {
    const validate = validateArgv(this.o);
    return [
      `traffic: nginx upstream "${this.o.upstream.name}" in ${this.o.file}`,
      `  stable ${this.o.upstream.stable}, canary ${this.o.upstream.canary}`,
      `  each step: write the file, ${
        validate ? `\`${validate.join(" ")}\`` : "no nginx -t (no --nginx-conf)"
      }, \`${reloadArgv(this.o).join(" ")}\``,
    ];
  }

  async preflight(): Promise<void> {
    await this.files.writable(this.o.file);
    const validate = validateArgv(this.o);
    if (validate) await this.#must(validate, "nginx -t refuses the current config");
  }

  async #must(argv: string[], what: string): Promise<void> {
    let res: CommandResult;
    try {
      res = await this.run(argv);
    } catch (err) {
      throw new Error(`${what}: cannot run ${argv[0]}: ${(err as Error).message}`);
    }
    if (res.code !== 0) {
      throw new Error(`${what} (\`${argv.join(" ")}\` exit ${res.code}): ${res.output.trim()}`);
    }
  }

  async #set(percent: number, note: string): Promise<string> {
    const previous = await this.files.read(this.o.file);
    await this.files.write(this.o.file, renderUpstream(this.o.upstream, percent, note));
    try {
      const validate = validateArgv(this.o);
      if (validate) await this.#must(validate, "nginx -t refused the new upstream file");
      await this.#must(reloadArgv(this.o), "nginx reload failed");
    } catch (err) {
      // Back to what nginx still runs, so the next reload does not pick up the refused file.
      if (previous === undefined) await this.files.remove(this.o.file);
      else await this.files.write(this.o.file, previous);
      throw err;
    }
    const w = weightsFor(percent);
    const side = (name: string, weight: number) =>
      weight ? `${name} weight ${weight}` : `${name} left out`;
    return `wrote ${this.o.file} (${side("stable", w.stable)}, ${side("canary", w.canary)}), ${
      this.o.conf ? "nginx -t ok, " : ""
    }reloaded`;
  }

  apply(percent: number): Promise<string> {
    return this.#set(percent, `step ${percent}%`);
  }

  promote(): Promise<string> {
    return this.#set(100, "promoted");
  }

  rollback(reason: string): Promise<string> {
    return this.#set(0, `rolled back (${reason.replace(/\n/g, " ").slice(0, 200)})`);
  }
}

/** Real commands: argv, no shell; stdout and stderr together for the report. */
export const runCommand: RunCommand = async (argv) => {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
};

/** Real files. */
export const realFiles: Files = {
  async read(path) {
    try {
      return await Deno.readTextFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
  },
  async write(path, text) {
    const tmp = `${path}.canary-${crypto.randomUUID().slice(0, 8)}.tmp`;
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, path);
  },
  async remove(path) {
    await Deno.remove(path).catch(() => {});
  },
  async writable(path) {
    const probe = `${dirname(path)}/.canary-probe-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  },
};
