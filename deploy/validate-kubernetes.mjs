// Validates Kubernetes objects against the Kubernetes API's OpenAPI schemas, as compiled into
// ajv validators by the kubernetes-models package (pinned in package-lock.json). It reads a
// JSON array of {"source": "file#document", "object": {...}} on stdin (deploy_test.go converts
// the YAML manifests) and prints one line per problem; exit 1 when there is one, or when an
// object's apiVersion and kind have no schema (an unknown kind is not waved through).
import { readFileSync } from "node:fs";

const docs = JSON.parse(readFileSync(0, "utf8"));
let problems = 0;
for (const { source, object } of docs) {
  const { apiVersion, kind } = object ?? {};
  const name = `${source} ${kind}/${object?.metadata?.name ?? "?"}`;
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[a-z0-9.]+(\/[a-z0-9]+)?$/.test(apiVersion) || !/^[A-Za-z0-9]+$/.test(kind)) {
    console.log(`${name}: apiVersion and kind must name a Kubernetes type`);
    problems++;
    continue;
  }
  let Model;
  try {
    Model = (await import(`kubernetes-models/${apiVersion}/${kind}`))[kind];
  } catch {
    Model = undefined;
  }
  if (typeof Model !== "function") {
    console.log(`${name}: no schema for ${apiVersion} ${kind}`);
    problems++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (err) {
    console.log(`${name}: ${err.message}`);
    problems++;
  }
}
if (problems > 0) {
  process.exit(1);
}
console.log(`${docs.length} objects valid`);
