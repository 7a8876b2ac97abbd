// The ONNX Runtime a harness runs on: "node" (onnxruntime-node, native) or "web"
// (onnxruntime-web's WASM build, one thread, run by Node).
import { NODE_SESSION_OPTIONS } from "../../dist/esm/node.js";

export async function loadOrt(backend) {
  if (backend === "node") {
    return { ort: await import("onnxruntime-node"), sessionOptions: NODE_SESSION_OPTIONS };
  }
  if (backend === "web") {
    const ort = await import("onnxruntime-web");
    ort.env.wasm.numThreads = 1;
    ort.env.logLevel = "error";
    return { ort, sessionOptions: { executionProviders: ["wasm"], graphOptimizationLevel: "all" } };
  }
  throw new Error(`unknown backend ${backend}: node or web`);
}
