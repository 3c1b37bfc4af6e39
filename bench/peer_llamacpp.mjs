// peer_llamacpp.mjs — times llama.cpp's own model loader (through the npm
// package node-llama-cpp) against `tierload load` on the same llama GGUF,
// warm and cold, in two memory conditions, alternating, and prints medians
// and ratios. Run by peer_llamacpp.sh, which installs the package and writes
// the model:
//
//   node peer_llamacpp.mjs NPM_DIR TIERLOAD MODEL ROUNDS
//   node peer_llamacpp.mjs --llama NPM_DIR MODEL mmap|nommap   (one load, JSON on stdout)
//
// Two times per run, each in a fresh process. "step": the wall clock of
// opening and loading the model inside the process — llama.cpp's loadModel()
// call, tierload's open_seconds + seconds from `tierload load --json`.
// "process": the whole process from spawn to exit (node's start and
// getLlama() included for llama.cpp; exec, open, load, freeing the copy and
// exit for tierload). Ratios are of steps. Conditions: "recycled" — right after
// another process touched and freed as many bytes as the model has; "idle" —
// after 8 s with nothing running here (on VMs that hand freed memory back to
// the host, memory touched after a pause faults in slower). Warm: the file
// is read once first; cold: its pages are dropped first (dd iflag=nocache).
import {spawnSync} from "node:child_process";
import {statSync} from "node:fs";
import {resolve} from "node:path";
import {pathToFileURL} from "node:url";

if (process.argv[2] === "--llama") {
    const [, , , npmDir, model, how] = process.argv;
    const url = pathToFileURL(resolve(npmDir, "node_modules/node-llama-cpp/dist/index.js"));
    const {getLlama, LlamaLogLevel} = await import(url.href);
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
    const base = process.memoryUsage().rss;
    const t0 = performance.now();
    const m = await llama.loadModel({modelPath: model, useMmap: how === "mmap"});
    const seconds = (performance.now() - t0) / 1000;
    const rss = process.resourceUsage().maxRSS * 1024;
    console.log(JSON.stringify({seconds, rss, base, system: llama.systemInfo, gpu: llama.gpu}));
    await m.dispose();
    process.exit(0);
}

const [, , npmDir, tierload, model, roundsArg] = process.argv;
const rounds = Math.max(1, Number(roundsArg) || 3);
const size = statSync(model).size;
const self = new URL(import.meta.url).pathname;

// run a command; its stdout is returned, or discarded when toNull (cat of a whole model)
function sh(cmd, args, toNull = false) {
    const stdio = ["ignore", toNull ? "ignore" : "pipe", "pipe"];
    const r = spawnSync(cmd, args, {encoding: "utf8", maxBuffer: 1 << 26, stdio});
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr || r.status}`);
    return r.stdout;
}
const warm = () => sh("cat", [model], true);
const cold = () => sh("dd", [`if=${model}`, "iflag=nocache", "count=0", "status=none"]);
// another process touches and frees as many bytes as the model has
const recycle = () => sh(process.execPath, ["-e", `Buffer.alloc(${size}, 1)`]);
const idle = () => sh("sleep", [process.env.PEER_IDLE ?? "8"]);

let backend = null;
const loaders = {
    "llama.cpp mmap": () => llamaLoad("mmap"),
    "llama.cpp no-mmap": () => llamaLoad("nommap"),
    "tierload buffered": () => tlLoad(["--mode", "buffered"]),
    "tierload direct": () => tlLoad(["--mode", "direct"]),
    "tierload auto": () => tlLoad(["--mode", "auto"]),
    "tierload auto --hugepages": () => tlLoad(["--mode", "auto", "--hugepages"]),
    "cat": () => {
        const t0 = performance.now();
        sh("cat", [model], true);
        const seconds = (performance.now() - t0) / 1000;
        return {seconds, proc: seconds, rss: 0, base: 0};
    },
};
function llamaLoad(how) {
    const t0 = performance.now();
    const out = JSON.parse(sh(process.execPath, [self, "--llama", npmDir, model, how]).trim());
    out.proc = (performance.now() - t0) / 1000;
    backend ??= `${out.system.trim()} (gpu: ${out.gpu})`;
    return out;
}
function tlLoad(args) {
    const t0 = performance.now();
    const out = sh(tierload, ["load", "--json", "--quiet", ...args, model]);
    const proc = (performance.now() - t0) / 1000;
    const j = JSON.parse(out);
    return {seconds: j.open_seconds + j.seconds, proc, rss: j.memory.vm_hwm, base: 0};
}

const median = (a) => {
    const s = [...a].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const res = {}; // "cond/cache/loader" -> [{seconds, rss}]
const names = Object.keys(loaders);
for (let r = 0; r < rounds; r++) {
    for (const cond of ["recycled", "idle"]) {
        for (const cache of ["warm", "cold"]) {
            // rotate the order every round so no loader always goes first
            const order = names.map((_, i) => names[(i + r) % names.length]);
            for (const name of order) {
                if (name === "cat" && cache === "warm") continue;
                cache === "warm" ? warm() : cold();
                cond === "recycled" ? recycle() : idle();
                const x = loaders[name]();
                (res[`${cond}/${cache}/${name}`] ??= []).push(x);
                process.stderr.write(`round ${r + 1} ${cond} ${cache} ${name}: ${x.seconds.toFixed(3)} s\n`);
            }
        }
    }
}

console.log(`model ${model}: ${(size / 2 ** 30).toFixed(2)} GiB; ${rounds} rounds, medians (min-max)`);
console.log(`llama.cpp CPU backend: ${backend}`);
console.log("step: llama.cpp's loadModel() call, tierload's open + load (in-process wall clocks);" +
            " process: spawn to exit; ratios are of steps;" +
            " peak RSS: whole process (node's own runtime included for llama.cpp); added: peak" +
            " minus RSS before loadModel (tierload: whole process)");
for (const cond of ["recycled", "idle"]) {
    for (const cache of ["warm", "cold"]) {
        const ref = res[`${cond}/${cache}/llama.cpp no-mmap`];
        const refMed = median(ref.map((x) => x.seconds));
        const catMed = cache === "cold" ? median(res[`${cond}/cold/cat`].map((x) => x.seconds)) : 0;
        console.log(`\n${cond}, ${cache}:`);
        console.log(`  ${"loader".padEnd(27)} ${"step s".padStart(9)} ${"min-max s".padStart(15)}` +
                    ` ${"x no-mmap".padStart(9)} ${"x cat".padStart(6)} ${"process s".padStart(9)}` +
                    ` ${"peak RSS MiB".padStart(12)}` +
                    ` ${"added MiB".padStart(9)}`);
        for (const name of names) {
            const xs = res[`${cond}/${cache}/${name}`];
            if (!xs) continue;
            const s = xs.map((x) => x.seconds);
            const m = median(s);
            const rss = median(xs.map((x) => x.rss));
            console.log(`  ${name.padEnd(27)} ${m.toFixed(3).padStart(9)} ` +
                        `${(Math.min(...s).toFixed(2) + "-" + Math.max(...s).toFixed(2)).padStart(15)} ` +
                        `${(m / refMed).toFixed(2).padStart(9)} ` +
                        `${(catMed ? (m / catMed).toFixed(2) : "").padStart(6)} ` +
                        `${median(xs.map((x) => x.proc)).toFixed(3).padStart(9)} ` +
                        `${rss ? (rss / 2 ** 20).toFixed(0).padStart(12) : "".padStart(12)} ` +
                        `${rss ? ((rss - median(xs.map((x) => x.base))) / 2 ** 20).toFixed(0).padStart(9) : ""}`);
        }
    }
}
