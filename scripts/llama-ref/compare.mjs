// scripts/llama-ref/compare.mjs — compare two logits files (n x vocab
// float32 little-endian, as `moecpu eval --logits-out` and logits.mjs write
// them) and optionally fail on thresholds.  No dependencies.
//
//   node scripts/llama-ref/compare.mjs A B --vocab N [--max-abs X] [--min-top1 F] [--max-kl X] [--quiet]
//
// Prints one line: positions, max |a-b|, max |a| (for scale), the fraction
// of positions whose argmax agrees, and the mean and max KL(softmax(a) ||
// softmax(b)) in nats.  Exit 0 when every given threshold holds, 1 when one
// fails, 2 on bad input (sizes differ, not a multiple of vocab, non-finite).
import fs from "node:fs";
import process from "node:process";

function fail(msg, code = 2) {
    process.stderr.write(`compare.mjs: ${msg}\n`);
    process.exit(code);
}

const args = process.argv.slice(2);
const files = [];
const opt = {vocab: 0, maxAbs: null, minTop1: null, maxKl: null, quiet: false};
for (let i = 0; i < args.length; i++) {
    const k = args[i];
    const num = () => {
        if (i + 1 >= args.length) fail(`${k} needs a value`);
        const v = Number(args[++i]);
        if (!Number.isFinite(v) || v < 0) fail(`${k}: '${args[i]}' is not a non-negative number`);
        return v;
    };
    if (k === "--vocab") opt.vocab = num();
    else if (k === "--max-abs") opt.maxAbs = num();
    else if (k === "--min-top1") opt.minTop1 = num();
    else if (k === "--max-kl") opt.maxKl = num();
    else if (k === "--quiet") opt.quiet = true;
    else if (k.startsWith("-")) fail(`unknown option ${k}`);
    else files.push(k);
}
if (files.length !== 2) fail("usage: compare.mjs A B --vocab N [--max-abs X] [--min-top1 F] [--max-kl X] [--quiet]");
if (!Number.isInteger(opt.vocab) || opt.vocab < 1) fail("--vocab N is required");

const read = (p) => {
    let b;
    try {
        b = fs.readFileSync(p);
    } catch (e) {
        fail(`${p}: ${e.message}`);
    }
    if (b.length % (4 * opt.vocab)) fail(`${p}: ${b.length} bytes is not a whole number of ${opt.vocab}-float rows`);
    const f = new Float32Array(b.length / 4);
    for (let i = 0; i < f.length; i++) f[i] = b.readFloatLE(4 * i);
    for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i])) fail(`${p}: value ${i} is not finite`);
    return f;
};
const a = read(files[0]), b = read(files[1]);
if (a.length !== b.length) fail(`${files[0]} has ${a.length / opt.vocab} rows, ${files[1]} ${b.length / opt.vocab}`);

const V = opt.vocab, n = a.length / V;
let maxAbs = 0, maxRef = 0, agree = 0, klSum = 0, klMax = 0;
const logSoftmax = (x) => {
    let m = -Infinity;
    for (const v of x) m = Math.max(m, v);
    let s = 0;
    for (const v of x) s += Math.exp(v - m);
    const lse = m + Math.log(s);
    return Array.from(x, (v) => v - lse);
};
for (let p = 0; p < n; p++) {
    const ra = a.subarray(p * V, (p + 1) * V), rb = b.subarray(p * V, (p + 1) * V);
    let ta = 0, tb = 0;
    for (let j = 0; j < V; j++) {
        maxAbs = Math.max(maxAbs, Math.abs(ra[j] - rb[j]));
        maxRef = Math.max(maxRef, Math.abs(ra[j]));
        if (ra[j] > ra[ta]) ta = j;
        if (rb[j] > rb[tb]) tb = j;
    }
    if (ta === tb) agree++;
    const la = logSoftmax(ra), lb = logSoftmax(rb);
    let kl = 0;
    for (let j = 0; j < V; j++) kl += Math.exp(la[j]) * (la[j] - lb[j]);
    kl = Math.max(kl, 0);
    klSum += kl;
    klMax = Math.max(klMax, kl);
}
const top1 = n ? agree / n : 1;
if (!opt.quiet) {
    console.log(`positions ${n}  max|a-b| ${maxAbs.toExponential(3)}  max|a| ${maxRef.toFixed(3)}  ` +
                `top1 ${agree}/${n}  KL mean ${(n ? klSum / n : 0).toExponential(3)} max ${klMax.toExponential(3)}`);
}
const bad = [];
if (opt.maxAbs !== null && maxAbs > opt.maxAbs) bad.push(`max|a-b| ${maxAbs} > ${opt.maxAbs}`);
if (opt.minTop1 !== null && top1 < opt.minTop1) bad.push(`top-1 agreement ${top1} < ${opt.minTop1}`);
if (opt.maxKl !== null && klMax > opt.maxKl) bad.push(`max KL ${klMax} > ${opt.maxKl}`);
if (bad.length) fail(bad.join("; "), 1);
