// Listening TCP sockets of this network namespace, read from /proc/net/tcp and /proc/net/tcp6.
// The kernel prints every socket there (established ones too), one fixed-format line each; only
// LISTEN lines (state 0A) are decoded, with one anchored regular expression per line, so a scan
// costs a couple of small reads and no allocation per non-listening socket beyond the line split.
import { readFile } from "node:fs/promises";
import { endianness } from "node:os";

export interface TcpListener {
  /** Textual address: dotted IPv4, or IPv6 in the compressed form Node uses (`::1`, `::`). */
  address: string;
  port: number;
  family: 4 | 6;
}

// `  sl: LOCAL:PORT REMOTE:PORT ST …`; LISTEN is 0A. Addresses are hex, 8 or 32 digits.
const LISTEN_LINE = /^\s*\d+: ([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4}) [0-9A-F]+:[0-9A-F]{4} 0A /;

const LITTLE_ENDIAN = endianness() === "LE";

/** One 32-bit word as the kernel printed it (host byte order) → its 4 bytes in network order. */
function wordBytes(hex: string): number[] {
  const v = Number.parseInt(hex, 16);
  const be = [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
  return LITTLE_ENDIAN ? be.reverse() : be;
}

function ipv4(hex: string): string {
  return wordBytes(hex).join(".");
}

function ipv6(hex: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < 32; i += 8) bytes.push(...wordBytes(hex.slice(i, i + 8)));
  // IPv4-mapped (::ffff:a.b.c.d) stays in the form Node reports for such sockets.
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${bytes.slice(12).join(".")}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // RFC 5952: the longest run (of two or more) of zero groups becomes "::".
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hexGroups = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hexGroups.join(":");
  const head = hexGroups.slice(0, bestStart).join(":");
  const tail = hexGroups.slice(bestStart + bestLen).join(":");
  return `${head}::${tail}`;
}

/** The LISTEN sockets of one /proc/net/tcp{,6} text. */
export function parseProcNetTcp(text: string, family: 4 | 6): TcpListener[] {
  const out: TcpListener[] = [];
  for (const line of text.split("\n")) {
    const m = LISTEN_LINE.exec(line);
    if (!m?.[1] || !m[2]) continue;
    const hex = m[1];
    if ((family === 4) !== (hex.length === 8)) continue;
    out.push({
      address: family === 4 ? ipv4(hex) : ipv6(hex),
      port: Number.parseInt(m[2], 16),
      family,
    });
  }
  return out;
}

export interface ProcNetPaths {
  tcp: string;
  tcp6: string;
}

export const PROC_NET: ProcNetPaths = { tcp: "/proc/net/tcp", tcp6: "/proc/net/tcp6" };

/**
 * Every listening TCP socket of the caller's network namespace. A missing tcp6 (IPv6 disabled
 * in the kernel) counts as no IPv6 listeners; any other read failure is thrown.
 */
export async function readTcpListeners(paths: ProcNetPaths = PROC_NET): Promise<TcpListener[]> {
  const read = async (file: string): Promise<string> => {
    try {
      return await readFile(file, "latin1");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return "";
      throw error;
    }
  };
  const [v4, v6] = await Promise.all([read(paths.tcp), read(paths.tcp6)]);
  return [...parseProcNetTcp(v4, 4), ...parseProcNetTcp(v6, 6)];
}
