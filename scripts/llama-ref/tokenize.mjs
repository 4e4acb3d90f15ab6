// scripts/llama-ref/tokenize.mjs — llama.cpp's own tokenizer (through
// node-llama-cpp's prebuilt CPU binaries) on a GGUF, for tests/tokenizer_ref.sh.
//
//   node scripts/llama-ref/tokenize.mjs MODEL.gguf OUTDIR FILE...
//
// The model is loaded vocabulary-only (the weights are never read).  Each
// FILE is read as UTF-8 (invalid bytes become U+FFFD per maximal subpart,
// the WHATWG decoder) and tokenized twice, without BOS: with special-token
// parsing (OUTDIR/NAME.special) and without (OUTDIR/NAME.plain), ids
// space-separated on one line.
import fs from "node:fs";
import path from "node:path";
import process from "node:process";

async function main() {
    const [modelPath, outDir, ...files] = process.argv.slice(2);
    if (!modelPath || !outDir || files.length === 0) {
        process.stderr.write("usage: node scripts/llama-ref/tokenize.mjs MODEL.gguf OUTDIR FILE...\n");
        process.exit(2);
    }
    let nlc;
    try {
        nlc = await import("node-llama-cpp");
    } catch (e) {
        process.stderr.write(`tokenize.mjs: node-llama-cpp is not installed (run scripts/llama-ref/install.sh): ${e.message}\n`);
        process.exit(1);
    }
    const {getLlama, LlamaLogLevel} = nlc;
    const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                                  progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1});
    const model = await llama.loadModel({modelPath: path.resolve(modelPath), gpuLayers: 0, vocabOnly: true});
    const dec = new TextDecoder("utf-8", {fatal: false, ignoreBOM: true});
    for (const f of files) {
        const text = dec.decode(fs.readFileSync(f));
        const name = path.basename(f);
        fs.writeFileSync(path.join(outDir, name + ".special"), model.tokenize(text, true).join(" ") + "\n");
        fs.writeFileSync(path.join(outDir, name + ".plain"), model.tokenize(text, false).join(" ") + "\n");
    }
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    process.stderr.write(`tokenize.mjs: ${e.message}\n`);
    process.exit(1);
});
