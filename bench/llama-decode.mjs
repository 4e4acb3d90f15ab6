// bench/llama-decode.mjs — decode speed of mainline llama.cpp (the
// node-llama-cpp prebuilt CPU binaries of scripts/llama-ref) on a GGUF, for
// scripts/bench-pager.sh: N single-token evaluations from position 0 with
// the same pseudo-random ids `moecpu bench -m MODEL -p 0 -n N` uses
// (xorshift64 from 0x9E3779B97F4A7C15, id = s mod vocab), or the first N
// ids of --token-ids-file FILE (as `moecpu bench --token-ids-file`: ids
// separated by white space or commas).  llama.cpp keeps its defaults for
// weights (mmap, no mlock).  Prints one JSON line:
// {"tg_tps": ..., "n": ..., "load_s": ...}.
//
//   node bench/llama-decode.mjs MODEL.gguf [-n 32] [--threads 2] [--token-ids-file FILE]
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import {createRequire} from "node:module";

const args = process.argv.slice(2);
let model = null, n = 32, threads = 2, idsFile = null;
for (let i = 0; i < args.length; i++) {
    if (args[i] === "-n") n = Number(args[++i]);
    else if (args[i] === "--threads") threads = Number(args[++i]);
    else if (args[i] === "--token-ids-file") idsFile = args[++i];
    else if (!model) model = args[i];
    else throw new Error(`unexpected argument ${args[i]}`);
}
if (!model || !(n >= 1) || !(threads >= 1)) {
    process.stderr.write("usage: node bench/llama-decode.mjs MODEL.gguf [-n 32] [--threads 2] [--token-ids-file FILE]\n");
    process.exit(2);
}
let fileIds = null;
if (idsFile) {
    let text;
    try {
        text = fs.readFileSync(idsFile, "utf8");
    } catch (e) {
        process.stderr.write(`llama-decode: cannot read ${idsFile}: ${e.message}\n`);
        process.exit(2);
    }
    fileIds = text.split(/[\s,]+/).filter((x) => x !== "").map(Number);
    const bad = fileIds.findIndex((x) => !Number.isInteger(x) || x < 0);
    if (bad >= 0 || fileIds.length < n) {
        process.stderr.write(bad >= 0 ? `llama-decode: entry ${bad + 1} of ${idsFile} is not a token id\n`
                                      : `llama-decode: ${idsFile} holds ${fileIds.length} token ids; -n ${n} needs ${n}\n`);
        process.exit(2);
    }
}
// node-llama-cpp lives in scripts/llama-ref/node_modules
const require = createRequire(path.resolve("scripts/llama-ref/package.json"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                              progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: threads});
const t0 = performance.now();
const m = await llama.loadModel({modelPath: path.resolve(model), gpuLayers: 0});
const ctx = await m.createContext({contextSize: Math.max(n + 8, 32), batchSize: 1, flashAttention: false,
                                   threads: {ideal: threads, min: threads}, sequences: 1});
const t1 = performance.now();
const vocab = m.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length;
const seq = ctx.getSequence();
let s = 0x9E3779B97F4A7C15n;
const mask = (1n << 64n) - 1n;
const ids = [];
for (let i = 0; i < n; i++) {
    s ^= (s << 13n) & mask; s ^= s >> 7n; s ^= (s << 17n) & mask;
    ids.push(fileIds ? fileIds[i] : Number(s % BigInt(vocab)));
}
const over = ids.findIndex((x) => x >= vocab);
if (over >= 0) {
    process.stderr.write(`llama-decode: token id ${ids[over]} (entry ${over + 1}) is not below the vocabulary size ${vocab}\n`);
    process.exit(2);
}
const t2 = performance.now();
for (const id of ids) await seq.controlledEvaluate([[id, {generateNext: {logits: true}}]]);
const t3 = performance.now();
process.stdout.write(JSON.stringify({tg_tps: n / ((t3 - t2) / 1000), n, load_s: (t1 - t0) / 1000}) + "\n");
await ctx.dispose();
await m.dispose();
await llama.dispose();
