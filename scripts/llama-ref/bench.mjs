// scripts/llama-ref/bench.mjs — llama.cpp's speed on a GGUF, measured the
// way `moecpu bench -m MODEL -p P -n N -r R` measures moecpu, for the
// comparison in scripts/bench-v2lite.sh:
//
//   node scripts/llama-ref/bench.mjs MODEL.gguf [-p 512] [-n 128] [-r 3] [-t 2] [--batch 512] [--json]
//
// Mainline llama.cpp through node-llama-cpp's prebuilt CPU binaries (no GPU,
// no build, no download).  Each repetition clears the sequence, evaluates
// one prompt of P pseudo-random tokens in batches of --batch (logits of the
// last token only, like llama-bench's pp), then N single-token steps, each
// asking for the next token (so the output layer runs every step, as in
// llama-bench's tg and in moecpu's bench).  pp = P / prompt time, tg = N /
// decode time; medians over the repetitions.  F16 KV cache and no flash
// attention: llama-bench's defaults.
import path from "node:path";
import process from "node:process";

function usage(msg) {
    if (msg) process.stderr.write(`bench.mjs: ${msg}\n`);
    process.stderr.write("usage: node scripts/llama-ref/bench.mjs MODEL.gguf [-p 512] [-n 128] [-r 3] [-t 2] " +
                         "[--batch 512] [--json]\n");
    process.exit(2);
}

function parseArgs(argv) {
    const a = {model: null, p: 512, n: 128, r: 3, t: 2, batch: 512, json: false};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const int = (min) => {
            if (i + 1 >= argv.length) usage(`${k} needs a value`);
            const s = argv[++i];
            if (!/^\d+$/.test(s) || Number(s) < min) usage(`${k}: '${s}' is not an integer >= ${min}`);
            return Number(s);
        };
        if (k === "-p") a.p = int(1);
        else if (k === "-n") a.n = int(1);
        else if (k === "-r") a.r = int(1);
        else if (k === "-t") a.t = int(1);
        else if (k === "--batch") a.batch = int(1);
        else if (k === "--json") a.json = true;
        else if (k === "-h" || k === "--help") usage();
        else if (k.startsWith("-")) usage(`unknown option ${k}`);
        else if (a.model === null) a.model = k;
        else usage(`unexpected argument ${k}`);
    }
    if (!a.model) usage("no model file");
    return a;
}

const median = (xs) => {
    const s = [...xs].sort((x, y) => x - y);
    return s[Math.floor(s.length / 2)];
};

async function main() {
    const a = parseArgs(process.argv.slice(2));
    let nlc;
    try {
        nlc = await import("node-llama-cpp");
    } catch (e) {
        process.stderr.write(`bench.mjs: node-llama-cpp is not installed (run scripts/llama-ref/install.sh): ${e.message}\n`);
        process.exit(1);
    }
    const {getLlama, LlamaLogLevel} = nlc;
    const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                                  progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: a.t});
    const model = await llama.loadModel({modelPath: path.resolve(a.model), gpuLayers: 0});
    const vocab = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? 1000;
    const context = await model.createContext({contextSize: a.p + a.n + 8, batchSize: Math.min(a.batch, a.p),
                                               threads: {ideal: a.t, min: a.t}, sequences: 1, flashAttention: false});
    const seq = context.getSequence();
    // The same pseudo-random ids as moecpu's bench (xorshift64).
    let s = 0x9E3779B97F4A7C15n;
    const mask = (1n << 64n) - 1n;
    const ids = [];
    for (let i = 0; i < a.p + a.n + 1; i++) {
        s ^= (s << 13n) & mask; s ^= s >> 7n; s ^= (s << 17n) & mask;
        ids.push(Number(s % BigInt(vocab)));
    }
    const pp = [], tg = [];
    for (let r = 0; r < a.r; r++) {
        await seq.clearHistory();
        const prompt = ids.slice(0, a.p).map((t, i) => (i === a.p - 1 ? [t, {generateNext: {token: true}}] : t));
        const t0 = process.hrtime.bigint();
        await seq.controlledEvaluate(prompt);
        const t1 = process.hrtime.bigint();
        for (let i = 0; i < a.n; i++) await seq.controlledEvaluate([[ids[a.p + i], {generateNext: {token: true}}]]);
        const t2 = process.hrtime.bigint();
        pp.push(a.p / (Number(t1 - t0) * 1e-9));
        tg.push(a.n / (Number(t2 - t1) * 1e-9));
    }
    const res = {model: a.model, threads: a.t, p: a.p, n: a.n, pp_tps: median(pp), tg_tps: median(tg),
                 pp_all: pp, tg_all: tg};
    if (a.json) process.stdout.write(JSON.stringify(res) + "\n");
    else process.stdout.write(`llama.cpp ${a.model}: ${a.t} threads\npp${a.p} ${res.pp_tps.toFixed(2)} tok/s\n` +
                              `tg${a.n} ${res.tg_tps.toFixed(2)} tok/s\n`);
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    process.stderr.write(`bench.mjs: ${e?.message ?? e}\n`);
    process.exit(1);
});
