// Builds the package: tsc -> dist/esm (ESM + .d.ts, for Node and bundlers) and esbuild
// -> dist/browser (minified ESM for pages and the Web Worker; ONNX Runtime excluded, it
// is loaded from wherever the app serves it).
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
rmSync(join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], { stdio: "inherit" });
await build({
  entryPoints: { "asyncfl-web": join(root, "src/browser.ts"), worker: join(root, "src/worker.ts") },
  outdir: join(root, "dist/browser"),
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  external: ["onnxruntime-web", "onnxruntime-node"],
  logLevel: "warning",
});
