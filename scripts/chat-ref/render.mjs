// scripts/chat-ref/render.mjs — the independent reference for src/chat.c:
// renders a chat template with @huggingface/jinja (the Jinja engine of
// transformers.js; installed with node-llama-cpp by scripts/llama-ref/install.sh).
//
// usage: node render.mjs TEMPLATE.jinja CASES.json
//   CASES.json: [{"messages": [{"role": "user", "content": "..."}, ...],
//                 "add_generation_prompt": true, "bos_token": "...", "eos_token": "..."}, ...]
// Prints a JSON array with one rendered string per case.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const lib = path.join(here, "..", "llama-ref", "node_modules", "@huggingface", "jinja", "dist", "index.js");
if (!fs.existsSync(lib)) {
  console.error(`chat-ref: ${lib} is missing: run scripts/setup.sh (it installs node-llama-cpp, which brings @huggingface/jinja)`);
  process.exit(1);
}
const { Template } = await import(pathToFileURL(lib).href);

if (process.argv.length !== 4) {
  console.error("usage: node render.mjs TEMPLATE.jinja CASES.json");
  process.exit(2);
}
const tmpl = new Template(fs.readFileSync(process.argv[2], "utf8"));
const cases = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const out = cases.map((c) => tmpl.render(c));
process.stdout.write(JSON.stringify(out));
