/** Loading onnxruntime-web (WASM, one thread) from where the app serves it. */

import { ConfigError, describe } from "./errors.js";
import type { OrtModule } from "./ort.js";

/** Session options for onnxruntime-web: the WASM execution provider. */
export const WEB_SESSION_OPTIONS = { executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3 } as const;

interface WebOrt extends OrtModule {
  readonly env: { wasm: { numThreads?: number; wasmPaths?: string; proxy?: boolean }; logLevel?: string };
}

/**
 * Import onnxruntime-web's ESM build from `url` and set it to one WASM thread (more
 * threads need a cross-origin-isolated page; one thread keeps a phone cool).
 */
export async function loadWebOrt(url: string, wasmPaths: string): Promise<OrtModule> {
  let ort: WebOrt;
  try {
    ort = (await import(/* @vite-ignore */ url)) as WebOrt;
  } catch (error) {
    throw new ConfigError(`cannot load onnxruntime-web from ${url}: ${describe(error)}`, { cause: error });
  }
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.logLevel = "error";
  return ort;
}
