// scripts/chat-ref/detok.mjs — the reference for moecpu's text output in
// tests/cli_text.sh: token ids back to bytes straight from a tokenizer.json
// (Hugging Face format, byte-level BPE), written independently of
// src/tokenizer.c: vocabulary strings are mapped back through GPT-2's
// byte-to-unicode table; added tokens are their content.  Raw bytes, so
// output that is not valid UTF-8 compares exactly too.
//
// usage: node detok.mjs TOKENIZER.json IDS [--skip-special]   (IDS: "1,2,3" or "1 2 3")
import fs from "node:fs";

const [file, idsArg, flag] = process.argv.slice(2);
if (!file || idsArg === undefined) {
  console.error("usage: node detok.mjs TOKENIZER.json IDS [--skip-special]");
  process.exit(2);
}
const tj = JSON.parse(fs.readFileSync(file, "utf8"));
// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256+k in order.
const byteOf = new Map();
let k = 0;
for (let b = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  byteOf.set(String.fromCodePoint(printable ? b : 256 + k++), b);
}
const piece = new Map();
for (const [tok, id] of Object.entries(tj.model.vocab)) piece.set(id, { tok, added: false, special: false });
for (const a of tj.added_tokens || []) piece.set(a.id, { tok: a.content, added: true, special: !!a.special });
const out = [];
for (const s of idsArg.split(/[ ,\n]+/).filter((x) => x.length)) {
  const p = piece.get(Number(s));
  if (!p) { console.error(`detok: unknown id ${s}`); process.exit(1); }
  if (p.added) {
    if (!(p.special && flag === "--skip-special")) out.push(...Buffer.from(p.tok, "utf8"));
    continue;
  }
  for (const ch of p.tok) {
    const b = byteOf.get(ch);
    if (b === undefined) { console.error(`detok: id ${s}: '${ch}' is not in the byte alphabet`); process.exit(1); }
    out.push(b);
  }
}
process.stdout.write(Buffer.from(out));
