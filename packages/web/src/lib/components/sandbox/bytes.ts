/** Base64 and text sniffing for the terminal, process and file views. */

export function b64encode(bytes: Uint8Array): string {
  let s = "";
  // In slices: spreading a large array into fromCharCode overflows the call stack.
  for (let i = 0; i < bytes.length; i += 0x8000)
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function b64decode(text: string): Uint8Array {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const SNIFF_BYTES = 8192;

/**
 * The text of `bytes`, or null when they look binary: a NUL in the first 8 KiB, or not UTF-8.
 * `truncated` bytes may end in the middle of a character; that tail is not an error.
 */
export function textOf(bytes: Uint8Array, truncated: boolean): string | null {
  if (bytes.subarray(0, SNIFF_BYTES).includes(0)) return null;
  try {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    if (!truncated) return decoder.decode(bytes);
    // Cut back to a character boundary: continuation bytes are 10xxxxxx.
    let end = bytes.length;
    for (let k = 0; k < 3 && end > 0 && ((bytes[end - 1] ?? 0) & 0xc0) === 0x80; k++) end--;
    if (end > 0 && ((bytes[end - 1] ?? 0) & 0x80) !== 0) end--;
    return decoder.decode(bytes.subarray(0, end));
  } catch {
    // A decoding failure is the answer here (not UTF-8), not an error to report.
    return null;
  }
}
