/** SHA-256 with WebCrypto (browsers in a secure context, Web Workers, Node >= 20). */

import { ConfigError } from "./errors.js";

export async function sha256Hex(data: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined) {
    throw new ConfigError("WebCrypto is unavailable: serve the page over https or from localhost");
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  let out = "";
  for (const byte of digest) out += byte.toString(16).padStart(2, "0");
  return out;
}
