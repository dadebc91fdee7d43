import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Db } from "../db/db.js";
import { first } from "../db/db.js";
import { writeFileAtomic } from "../secrets.js";
import { CertificateAuthority } from "./ca.js";

/**
 * Where the control plane's CA comes from, in this order:
 * 1. NESTBOX_CA_CERT_FILE + NESTBOX_CA_KEY_FILE: PEM files an operator manages;
 * 2. the `certificate_authority` row: made by the first control plane to start, its private key
 *    sealed (AES-256-GCM) with NESTBOX_CA_KEY (64 hex characters; replicas share it) or else
 *    with `<data-dir>/ca-key` (0600, made at first start).
 */

export class CaConfigError extends Error {
  override name = "CaConfigError";
}

export interface CaSources {
  dataDir: string;
  /** NESTBOX_CA_KEY. */
  sealKeyHex?: string | undefined;
  /** NESTBOX_CA_CERT_FILE and NESTBOX_CA_KEY_FILE. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
}

export async function loadCertificateAuthority(
  db: Db,
  src: CaSources,
  log: (line: string) => void,
): Promise<CertificateAuthority> {
  if (src.certFile || src.keyFile) {
    if (!src.certFile || !src.keyFile)
      throw new CaConfigError("NESTBOX_CA_CERT_FILE and NESTBOX_CA_KEY_FILE go together");
    try {
      return await CertificateAuthority.load(
        readFileSync(src.certFile, "utf8"),
        readFileSync(src.keyFile, "utf8"),
      );
    } catch (err) {
      throw new CaConfigError(`the CA from ${src.certFile}: ${(err as Error).message}`);
    }
  }
  const key = sealKey(src);
  const read = () =>
    first<{ certificate_pem: string; private_key_sealed: string }>(
      db,
      "SELECT certificate_pem, private_key_sealed FROM certificate_authority WHERE id = 1",
    );
  let row = await read();
  if (!row) {
    const made = await CertificateAuthority.create();
    // Two replicas starting at once: one insert wins and both use its row.
    await db.query(
      `INSERT INTO certificate_authority (id, certificate_pem, private_key_sealed)
       VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`,
      [made.ca.certificatePem, seal(key, made.pkcs8)],
    );
    row = await read();
    if (!row) throw new Error("the certificate authority row vanished after its insert");
    log("[server] certificate authority created (hosts are trusted through it)");
  }
  let pkcs8: Uint8Array;
  try {
    pkcs8 = unseal(key, row.private_key_sealed);
  } catch {
    throw new CaConfigError(
      "the CA's private key in the database does not open with this key: set NESTBOX_CA_KEY to the one the first control plane used (or restore its <data-dir>/ca-key)",
    );
  }
  return CertificateAuthority.load(row.certificate_pem, pkcs8);
}

function sealKey(src: CaSources): Buffer {
  if (src.sealKeyHex !== undefined && src.sealKeyHex !== "") {
    if (!/^[0-9a-f]{64}$/i.test(src.sealKeyHex))
      throw new CaConfigError("NESTBOX_CA_KEY must be 64 hex characters (32 bytes)");
    return Buffer.from(src.sealKeyHex, "hex");
  }
  const file = path.join(src.dataDir, "ca-key");
  if (existsSync(file)) {
    const hex = readFileSync(file, "utf8").trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new CaConfigError(`${file} is not 64 hex characters`);
    return Buffer.from(hex, "hex");
  }
  mkdirSync(src.dataDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  writeFileAtomic(file, `${key.toString("hex")}\n`);
  return key;
}

const AAD = Buffer.from("nestbox certificate_authority v1");

function seal(key: Buffer, plain: Uint8Array): string {
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(AAD);
  const body = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]).toString("base64");
}

function unseal(key: Buffer, sealed: string): Uint8Array {
  const raw = Buffer.from(sealed, "base64");
  const d = createDecipheriv("aes-256-gcm", key, raw.subarray(0, 12));
  d.setAAD(AAD);
  d.setAuthTag(raw.subarray(12, 28));
  return new Uint8Array(Buffer.concat([d.update(raw.subarray(28)), d.final()]));
}
