// Validate rendered Kubernetes objects offline against the JSON schemas that the npm packages
// kubernetes-models (the Kubernetes API) and @kubernetes-models/keda (KEDA's CRDs) ship.
//
//   node scripts/ci/k8s-validate.mjs FILE.yaml...     (NODE_PATH: where those packages are)
//
// Every document must be an object of a known apiVersion/kind; an unknown kind is a failure,
// not a skip. Prints one line per object; exits 1 if any object is invalid.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const MODULES = process.env.NODE_PATH || join(process.cwd(), "node_modules");
const require = createRequire(join(MODULES, "x.js"));
const YAML = require("yaml");

// apiVersion "group/version" -> module path of the model class for a kind.
function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group.endsWith("keda.sh")) return `@kubernetes-models/keda/${group}/${version}/${kind}.js`;
  return group ? `kubernetes-models/${group}/${version}/${kind}.js` : `kubernetes-models/${version}/${kind}.js`;
}

async function validate(obj) {
  if (!obj || typeof obj !== "object" || !obj.apiVersion || !obj.kind) {
    throw new Error("not a Kubernetes object (no apiVersion/kind)");
  }
  // The packages' file layout, read directly (their "exports" map is for ESM importers).
  const resolved = join(MODULES, modelPath(obj.apiVersion, obj.kind));
  if (!existsSync(resolved)) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  const mod = await import(pathToFileURL(resolved).href);
  const Model = mod[obj.kind];
  new Model(obj).validate();   // throws with the schema errors
}

let bad = 0;
let count = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.log(`INVALID ${file}: YAML: ${doc.errors[0].message}`);
      bad++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    count++;
    const name = `${obj.apiVersion} ${obj.kind} ${obj.metadata?.name ?? "?"}`;
    try {
      await validate(obj);
      console.log(`valid   ${file}: ${name}`);
    } catch (err) {
      console.log(`INVALID ${file}: ${name}: ${String(err.message).split("\n").slice(0, 5).join(" | ")}`);
      bad++;
    }
  }
}
if (count === 0) {
  console.log("no objects to validate");
  process.exit(1);
}
process.exit(bad ? 1 : 0);
