// Checks real requests and responses against an OpenAPI document with ajv
// (JSON Schema 2020-12, the dialect of OpenAPI 3.1):
//   node conform.js DOC CASES
// CASES is a JSON list of { method, path, query: {k: v or [v]}, body (the
// JSON sent, or null), status, response (the JSON answered) }. For each the
// operation is found by path template and method; the body is checked
// against its requestBody schema, the query and path values against its
// parameters (as text turned into their types), the answer against the
// response of its status (else 2XX, else default). A case with invalid:
// true (an answer of 400 or 403 to input the gateway refused) must fail the
// request checks instead: the document predicts the refusal. With declared:
// true an error status must be listed by the operation. Prints one JSON line
// { checked, problems: [...] }; exit 1 when there are problems.
"use strict";
const fs = require("fs");
const SwaggerParser = require("@apidevtools/swagger-parser");
const Ajv2020 = require("ajv/dist/2020");

function match(doc, path) {
  for (const template of Object.keys(doc.paths)) {
    const names = [];
    const re = new RegExp("^" + template.replace(/[.*+?^$()|[\]\\]/g, "\\$&")
      .replace(/\{([^}]+)\}/g, (_, n) => { names.push(n); return "([^/]+)"; }) + "$");
    const m = re.exec(path);
    if (m) {
      const params = {};
      names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { template, params };
    }
  }
  return null;
}

async function main() {
  const doc = await SwaggerParser.dereference(process.argv[2]);
  const cases = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const text = new Ajv2020({ strict: false, allErrors: true, coerceTypes: "array" });
  const problems = [];
  let checked = 0;
  let refused = 0; // request checks that failed for the current case
  const check = (v, schema, what, c, coerce, request) => {
    const validate = (coerce ? text : ajv).compile(schema);
    checked++;
    if (validate(v)) return;
    if (request && c.invalid) { refused++; return; }
    problems.push(c.method + " " + c.path + ": " + what + ": " + ajv.errorsText(validate.errors));
  };
  for (const c of cases) {
    const hit = match(doc, c.path);
    const op = hit && doc.paths[hit.template][c.method.toLowerCase()];
    if (!op) {
      problems.push(c.method + " " + c.path + ": no operation in the document");
      continue;
    }
    refused = 0;
    for (const p of op.parameters || []) {
      const v = p.in === "path" ? hit.params[p.name] : (c.query || {})[p.name];
      if (v === undefined) {
        if (p.required && c.invalid) refused++;
        else if (p.required) problems.push(c.method + " " + c.path + ": parameter " + p.name + " missing");
        continue;
      }
      check({ v }, { type: "object", properties: { v: p.schema } }, "parameter " + p.name, c, true,
        true);
    }
    if (c.body !== null && c.body !== undefined) {
      const rb = op.requestBody;
      if (!rb) problems.push(c.method + " " + c.path + ": a body, and no requestBody");
      else check(c.body, rb.content["application/json"].schema, "request body", c, false, true);
    }
    if (c.invalid && refused === 0) {
      problems.push(c.method + " " + c.path + ": answered " + c.status
        + " but the document would accept this request");
    }
    const code = String(c.status);
    const res = op.responses[code] || (code[0] === "2" && op.responses["2XX"]) || op.responses.default;
    if (!res) {
      problems.push(c.method + " " + c.path + ": status " + code + " is not described");
      continue;
    }
    if (c.declared && !op.responses[code] && code[0] !== "2") {
      problems.push(c.method + " " + c.path + ": status " + code + " is not listed");
    }
    if (res.content && c.response !== undefined) {
      check(c.response, res.content["application/json"].schema, "response " + code, c);
    }
  }
  console.log(JSON.stringify({ checked, problems }));
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => { console.error(e.stack || e.message); process.exit(2); });
