/**
 * infra/azure without the Bicep compiler (not on npm or Debian; `az bicep
 * build` needs the network): every file parses with the tree-sitter Bicep
 * grammar, every name a file uses is declared in it, modules get exactly the
 * params they declare (all required ones) and expose the outputs used, the
 * parameter files set only declared params (and every required one), and the
 * resources keep the properties the ops spec asks for. What this cannot see:
 * resource types, API versions and property names (docs/deploy.md).
 */
import assert from "node:assert/strict";
import { Language, type Node, Parser } from "web-tree-sitter";
// Puts the grammar package in the module graph so its .wasm resolves to a file below.
import "tree-sitter-bicep/src/node-types.json" with { type: "json" };

const AZURE = decodeURIComponent(new URL("../../infra/azure/", import.meta.url).pathname);
const ENVS = ["dev", "prod"];

await Parser.init();
const parser = new Parser();
parser.setLanguage(
  await Language.load(
    await Deno.readFile(
      new URL(import.meta.resolve("tree-sitter-bicep/tree-sitter-bicep.wasm")),
    ),
  ),
);

/** The grammar has no `.bicepparam` rules; `param x = e` parses as `var x = e`. */
function parse(text: string, kind: "bicep" | "bicepparam" = "bicep"): Node {
  const source = kind === "bicepparam" ? text.replace(/^param (\w+) =/gm, "var $1 =") : text;
  return parser.parse(source)!.rootNode;
}

function walk(node: Node, visit: (n: Node) => void) {
  visit(node);
  for (const child of node.children) if (child) walk(child, visit);
}

function syntaxErrors(root: Node): string[] {
  const errors: string[] = [];
  walk(root, (n) => {
    if (n.isError || n.isMissing) {
      const at = `${n.startPosition.row + 1}:${n.startPosition.column + 1}`;
      errors.push(
        `${at} ${n.isMissing ? `missing ${n.type}` : `unexpected ${n.text.slice(0, 40)}`}`,
      );
    }
  });
  return errors;
}

const DECLARATIONS = [
  "parameter_declaration",
  "variable_declaration",
  "resource_declaration",
  "module_declaration",
  "output_declaration",
];
const named = (n: Node) => n.namedChildren.filter((c): c is Node => c !== null);

/** Names used in expressions but declared nowhere in the file (typos, missing params). */
function undeclared(root: Node): string[] {
  const declared = new Set<string>();
  const used: Node[] = [];
  walk(root, (n) => {
    if (DECLARATIONS.includes(n.type)) declared.add(named(n)[0].text);
    if (n.type === "for_statement") declared.add(n.childForFieldName("initializer")!.text);
    if (n.type === "lambda_expression") declared.add(named(n)[0].text);
    if (n.type !== "identifier") return;
    const parent = n.parent!;
    const first = named(parent)[0]?.id === n.id;
    if (DECLARATIONS.includes(parent.type) && first) return; // its own name
    if (parent.type === "object_property" && first) return; // a property key
    if (parent.type === "call_expression" && parent.childForFieldName("function")?.id === n.id) {
      return;
    }
    if (parent.type === "for_statement" && parent.childForFieldName("initializer")?.id === n.id) {
      return;
    }
    used.push(n);
  });
  return used.filter((n) => !declared.has(n.text))
    .map((n) => `${n.startPosition.row + 1}:${n.startPosition.column + 1} ${n.text}`);
}

interface Param {
  name: string;
  hasDefault: boolean;
}

function params(root: Node): Param[] {
  return named(root).filter((n) => n.type === "parameter_declaration").map((n) => {
    const [id, _type, value] = named(n);
    return { name: id.text, hasDefault: value !== undefined };
  });
}

const outputs = (root: Node) =>
  named(root).filter((n) => n.type === "output_declaration").map((n) => named(n)[0].text);

/** The value node of `key:` in an object node. */
function property(object: Node, key: string): Node | undefined {
  const prop = named(object).find((p) => p.type === "object_property" && named(p)[0].text === key);
  return prop ? named(prop)[1] : undefined;
}

const keys = (object: Node) =>
  named(object).filter((p) => p.type === "object_property").map((p) => named(p)[0].text);

const unquote = (s: string) => s.replace(/^'|'$/g, "");

async function bicepFiles(): Promise<string[]> {
  const files = ["main.bicep"];
  for await (const e of Deno.readDir(`${AZURE}modules`)) {
    if (e.name.endsWith(".bicep")) files.push(`modules/${e.name}`);
  }
  return files.sort();
}

const read = (path: string) => Deno.readTextFile(`${AZURE}${path}`);

Deno.test("bicep: the parser finds a broken file, and the name check a typo", () => {
  const good = "param a string\nvar b = [for x in [a]: { name: x }]\noutput o string = b[0].name\n";
  assert.deepEqual(syntaxErrors(parse(good)), []);
  assert.deepEqual(undeclared(parse(good)), []);
  assert.notDeepEqual(syntaxErrors(parse(good.replace("[a]:", "[a:"))), []);
  assert.notDeepEqual(syntaxErrors(parse("resource r 'T@1' = {\n  name: 'x'\n")), []);
  assert.deepEqual(undeclared(parse(good.replace("in [a]", "in [aa]"))), ["2:20 aa"]);
});

Deno.test("bicep: every file parses and uses only names it declares", async () => {
  for (const file of await bicepFiles()) {
    const root = parse(await read(file));
    assert.deepEqual(syntaxErrors(root), [], file);
    assert.deepEqual(undeclared(root), [], file);
  }
  for (const env of ENVS) {
    const root = parse(await read(`env/${env}.bicepparam`), "bicepparam");
    assert.deepEqual(syntaxErrors(root), [], env);
  }
});

Deno.test("bicep: modules exist, get exactly their params, and expose the outputs used", async () => {
  const main = parse(await read("main.bicep"));
  const modules = named(main).filter((n) => n.type === "module_declaration");
  assert.equal(modules.length, 5);
  const byName = new Map<string, string[]>();
  for (const module of modules) {
    const [id, path] = named(module);
    const file = unquote(path.text);
    const root = parse(await read(file)); // throws if the file is missing
    const declared = params(root);
    const body = named(module).find((n) => n.type === "object")!;
    const given = keys(property(body, "params")!);
    const unknown = given.filter((g) => !declared.some((p) => p.name === g));
    assert.deepEqual(unknown, [], `${file}: params it does not declare`);
    const missing = declared.filter((p) => !p.hasDefault && !given.includes(p.name)).map((p) =>
      p.name
    );
    assert.deepEqual(missing, [], `${file}: required params not given`);
    byName.set(id.text, outputs(root));
  }
  // Every `<module>.outputs.<name>` names an output the module declares.
  walk(main, (n) => {
    if (n.type !== "member_expression") return;
    const object = n.childForFieldName("object")!;
    if (object.type !== "member_expression") return;
    const module = object.childForFieldName("object")!.text;
    if (!byName.has(module) || object.childForFieldName("property")!.text !== "outputs") return;
    const output = n.childForFieldName("property")!.text;
    assert.ok(byName.get(module)!.includes(output), `${module}.outputs.${output} is not declared`);
  });
});

Deno.test("bicep: each environment's parameter file sets declared params, every required one", async () => {
  const declared = params(parse(await read("main.bicep")));
  const required = declared.filter((p) => !p.hasDefault).map((p) => p.name);
  for (const env of ENVS) {
    const text = await read(`env/${env}.bicepparam`);
    assert.match(text, /^using '\.\.\/main\.bicep'$/m, env);
    const set = [...text.matchAll(/^param (\w+) =/gm)].map((m) => m[1]);
    assert.deepEqual(
      set.filter((s) => !declared.some((p) => p.name === s)),
      [],
      `${env}: undeclared`,
    );
    assert.deepEqual(
      required.filter((r) => !set.includes(r)),
      [],
      `${env}: required params missing`,
    );
    assert.equal(new Set(set).size, set.length, `${env}: a param set twice`);
    // Secrets never in the file: every @secure() param comes from the deploying shell.
    const main = await read("main.bicep");
    for (const m of main.matchAll(/@secure\(\)\nparam (\w+)/g)) {
      const line = new RegExp(`^param ${m[1]} = (.*)$`, "m").exec(text)?.[1];
      if (line !== undefined) {
        assert.match(line, /^readEnvironmentVariable\('CVG_\w+'/, `${env}: ${m[1]}`);
      }
    }
    assert.match(text, new RegExp(`^param environment = '${env}'$`, "m"));
  }
});

Deno.test("bicep: backups, cache-only Redis, Key Vault RBAC and rotation, identity, OpenTelemetry", async () => {
  const value = (text: string, name: string) =>
    new RegExp(`^param ${name} = (.*)$`, "m").exec(text)?.[1];
  const prod = await read("env/prod.bicepparam");
  const dev = await read("env/dev.bicepparam");
  // RPO/RTO 24 h: point-in-time restore everywhere, geo-redundant backups in prod.
  assert.ok(Number(value(prod, "postgresBackupRetentionDays")) >= 7);
  assert.ok(Number(value(dev, "postgresBackupRetentionDays")) >= 7);
  assert.equal(value(prod, "postgresGeoRedundantBackup"), "true");
  assert.equal(value(prod, "postgresHighAvailability"), "true");
  const pg = await read("modules/postgres.bicep");
  assert.match(pg, /backupRetentionDays: backupRetentionDays\n/);
  assert.match(pg, /geoRedundantBackup: geoRedundantBackup \? 'Enabled' : 'Disabled'/);
  assert.match(pg, /@minValue\(7\)\n@maxValue\(35\)\nparam backupRetentionDays int/);

  // Redis: tiers without persistence only; nothing turns persistence on.
  const redis = await read("modules/redis.bicep");
  assert.match(redis, /@allowed\(\[\n {2}'Basic'\n {2}'Standard'\n\]\)\nparam skuName string/);
  assert.doesNotMatch(redis.replace(/\/\/.*$/gm, ""), /rdb-backup|aof-backup|Premium/);
  assert.match(redis, /enableNonSslPort: false/);
  for (const text of [prod, dev]) {
    assert.match(value(text, "redisSkuName")!, /^'(Basic|Standard)'$/);
  }

  // Key Vault: RBAC with read-only secret access for the app identity; expiry and near-expiry events.
  const kv = await read("modules/keyvault.bicep");
  assert.match(kv, /enableRbacAuthorization: true/);
  assert.match(kv, /enablePurgeProtection: true/);
  assert.match(kv, /var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'/);
  assert.match(kv, /principalId: readerPrincipalId/);
  assert.match(kv, /exp: expiresAt/);
  assert.match(kv, /'Microsoft\.KeyVault\.SecretNearExpiry'/);

  // Container Apps: user-assigned identity, secrets from Key Vault by that identity, OTel to App Insights.
  const apps = await read("modules/containerapps.bicep");
  assert.match(apps, /type: 'UserAssigned'/);
  assert.match(apps, /keyVaultUrl: s\.value\n\s+identity: identityId/);
  assert.match(apps, /tracesConfiguration: \{\n\s+destinations: \[\n\s+'appInsights'/);
  assert.match(apps, /name: 'OTEL_DENO'\n\s+value: 'true'/);
  assert.match(apps, /name: 'OTEL_TRACES_SAMPLER'\n\s+value: 'parentbased_traceidratio'/);
  assert.match(apps, /name: 'OTEL_TRACES_SAMPLER_ARG'\n\s+value: '0\.1'/);
  assert.match(apps, /name: 'ROLE'\n\s+value: 'aggregator'/);
  assert.match(apps, /path: '\/healthz'/);
  const grace = /terminationGracePeriodSeconds: (\d+)/.exec(apps);
  assert.ok(grace && Number(grace[1]) >= 20, "longer than metering.shutdown_flush_ms (10 s)");
  // The aggregator reads every secret it references.
  const main = await read("main.bicep");
  for (const ref of apps.matchAll(/secretRef: '([\w-]+)'/g)) {
    assert.match(main, new RegExp(`'${ref[1]}': `), `${ref[1]} is stored and referenced`);
  }
});
