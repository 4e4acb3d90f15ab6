// scripts/llama-ref/logits.mjs — the independent reference for moecpu's
// correctness tests: mainline llama.cpp, through node-llama-cpp's prebuilt
// CPU binaries (never built from source, never downloaded at run time).
//
//   node scripts/llama-ref/logits.mjs MODEL.gguf --token-ids 1,2,3 --logits-out FILE
//        [--greedy N --ids-out FILE] [--threads N] [--batch N] [--kv-type F32|F16|BF16|Q8_0]
//        [--flash-attention] [--verbose]
//   node scripts/llama-ref/logits.mjs --check     (the CPU backend loads; nothing else)
//
// Teacher-forces the ids from position 0 on a fresh sequence and writes the
// logits of every position: n_ids x n_vocab float32, little-endian, row i =
// the logits after ids[0..i].  With --greedy N it then appends N tokens, each
// the argmax of the previous logits (lowest id on ties), and writes them to
// --ids-out as space-separated ids on one line (the format of
// `moecpu run --print-ids`).  The logits of those N steps are not written.
//
// The CPU backend is forced (gpu: false), flash attention is off and the KV
// cache is F32 unless asked otherwise: FACTS.md measured llama.cpp against
// DeepSeek's reference to ~5e-5 without flash attention (with it, ~0.03);
// llama.cpp's default F16 cache alone moves tiny models' logits by ~3e-3.
// One thread by default: node-llama-cpp's default (more threads than cores)
// made an 8-token prefill of a tiny model take seconds on a busy 2-core VM
// instead of ~10 ms; --threads N to change it.
// Install the package first: scripts/llama-ref/install.sh.
import fs from "node:fs";
import path from "node:path";
import process from "node:process";

function usage(msg) {
    if (msg) process.stderr.write(`logits.mjs: ${msg}\n`);
    process.stderr.write(
        "usage: node scripts/llama-ref/logits.mjs MODEL.gguf --token-ids 1,2,3 --logits-out FILE\n" +
        "                [--greedy N --ids-out FILE] [--threads N] [--batch N] [--kv-type F32|F16|BF16|Q8_0]\n" +
        "                [--flash-attention] [--verbose]\n");
    process.exit(2);
}

function parseArgs(argv) {
    const a = {model: null, ids: null, logitsOut: null, greedy: 0, idsOut: null, threads: 1, batch: 0, kvType: "F32",
               flash: false, verbose: false};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const val = () => {
            if (i + 1 >= argv.length) usage(`${k} needs a value`);
            return argv[++i];
        };
        const int = (s, name, min) => {
            if (!/^\d+$/.test(s)) usage(`${name}: '${s}' is not a non-negative integer`);
            const n = Number(s);
            if (n < min) usage(`${name} must be >= ${min}`);
            return n;
        };
        if (k === "--token-ids") {
            const s = val();
            a.ids = s.split(",").map((t) => int(t.trim(), "--token-ids", 0));
        } else if (k === "--logits-out") a.logitsOut = val();
        else if (k === "--greedy") a.greedy = int(val(), "--greedy", 0);
        else if (k === "--ids-out") a.idsOut = val();
        else if (k === "--threads") a.threads = int(val(), "--threads", 1);
        else if (k === "--batch") a.batch = int(val(), "--batch", 1);
        else if (k === "--flash-attention") a.flash = true;
        else if (k === "--kv-type") {
            a.kvType = val().toUpperCase();
            if (!["F32", "F16", "BF16", "Q8_0"].includes(a.kvType)) usage(`--kv-type: ${a.kvType} (F32, F16, BF16, Q8_0)`);
        }
        else if (k === "--verbose") a.verbose = true;
        else if (k === "--check") a.check = true;
        else if (k === "-h" || k === "--help") usage();
        else if (k.startsWith("-")) usage(`unknown option ${k}`);
        else if (a.model === null) a.model = k;
        else usage(`unexpected argument ${k}`);
    }
    if (a.check) return a;
    if (!a.model) usage("no model file");
    if (!a.ids || a.ids.length === 0) usage("--token-ids is required");
    if (!a.logitsOut && !a.idsOut) usage("nothing to do: give --logits-out and/or --greedy N --ids-out FILE");
    if (a.greedy > 0 && !a.idsOut) usage("--greedy needs --ids-out");
    if (a.idsOut && a.greedy === 0) usage("--ids-out needs --greedy N");
    return a;
}

// Write via a temporary file and rename, so a crash never leaves half a file;
// a device or FIFO (/dev/null) is written directly, never replaced.
function writeAtomic(file, data) {
    let st = null;
    try { st = fs.statSync(file); } catch { /* does not exist yet */ }
    if (st && !st.isFile()) {
        fs.writeFileSync(file, data);
        return;
    }
    const tmp = `${file}.tmp${process.pid}`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
}

function argmax(row) {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    return best;
}

async function main() {
    const a = parseArgs(process.argv.slice(2));
    if (!a.check && !fs.existsSync(a.model)) usage(`${a.model}: no such file`);

    let nlc;
    try {
        nlc = await import("node-llama-cpp");
    } catch (e) {
        process.stderr.write(`logits.mjs: node-llama-cpp is not installed (run scripts/llama-ref/install.sh): ${e.message}\n`);
        process.exit(1);
    }
    const {getLlama, LlamaLogLevel} = nlc;

    // Prebuilt CPU binaries only: no GPU probing, no source download, no build.
    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        logLevel: a.verbose ? LlamaLogLevel.debug : LlamaLogLevel.error,
        maxThreads: a.threads,
    });
    if (a.check) { // install.sh's smoke test: the prebuilt CPU backend loads
        await llama.dispose();
        process.stdout.write("logits.mjs: llama.cpp CPU backend loads\n");
        return;
    }
    const model = await llama.loadModel({modelPath: path.resolve(a.model), gpuLayers: 0});
    const nTotal = a.ids.length + a.greedy;
    const nTok = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length;
    if (nTok) {
        const bad = a.ids.find((t) => t >= nTok);
        if (bad !== undefined) throw new Error(`token id ${bad} out of range: the vocabulary has ${nTok} tokens`);
    }
    const context = await model.createContext({
        contextSize: Math.max(nTotal + 8, 32),
        batchSize: a.batch || Math.max(a.ids.length, 1),
        flashAttention: a.flash,
        // F32 cache: the default F16 cache alone moves logits by ~3e-3.
        experimentalKvCacheKeyType: a.kvType,
        experimentalKvCacheValueType: a.kvType,
        threads: {ideal: a.threads, min: a.threads},
        sequences: 1,
    });
    const seq = context.getSequence();

    // The vocabulary size is the size of the logits map (checked to be dense).
    let vocab = 0;
    const logitsRow = (res, pos) => {
        const lg = res?.next?.logits;
        if (!lg) throw new Error(`no logits returned for position ${pos}`);
        if (vocab === 0) vocab = lg.size;
        if (lg.size !== vocab) throw new Error(`position ${pos}: ${lg.size} logits, expected ${vocab}`);
        const row = new Float32Array(vocab);
        row.fill(NaN);
        for (const [tok, v] of lg) {
            if (tok < 0 || tok >= vocab) throw new Error(`position ${pos}: logit for token ${tok} outside the vocabulary`);
            row[tok] = v;
        }
        for (let i = 0; i < vocab; i++)
            if (Number.isNaN(row[i])) throw new Error(`position ${pos}: no logit for token ${i}`);
        return row;
    };
    // Teacher forcing: every position asks for its logits.
    const input = a.ids.map((t) => [t, {generateNext: {logits: true}}]);
    const res = await seq.controlledEvaluate(input);
    const rows = res.map((r, i) => logitsRow(r, i));

    if (a.logitsOut) {
        const buf = Buffer.alloc(rows.length * vocab * 4);
        rows.forEach((row, i) => {
            for (let j = 0; j < vocab; j++) buf.writeFloatLE(row[j], (i * vocab + j) * 4);
        });
        writeAtomic(a.logitsOut, buf);
    }

    if (a.greedy > 0) {
        const out = [];
        let next = argmax(rows[rows.length - 1]);
        for (let k = 0; k < a.greedy; k++) {
            out.push(next);
            if (k + 1 === a.greedy) break;
            const r = await seq.controlledEvaluate([[next, {generateNext: {logits: true}}]]);
            next = argmax(logitsRow(r[0], a.ids.length + k));
        }
        writeAtomic(a.idsOut, out.join(" ") + "\n");
    }

    if (a.verbose) {
        process.stderr.write(`logits.mjs: ${a.ids.length} positions x ${vocab} logits` +
                             (a.greedy ? `, ${a.greedy} greedy tokens` : "") + "\n");
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    process.stderr.write(`logits.mjs: ${e?.message ?? e}\n`);
    process.exit(1);
});
