// @peculiar/x509 resolves its algorithms through tsyringe, which needs this polyfill first.
import "reflect-metadata";
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { cryptoProvider, Pkcs10CertificateRequestGenerator } from "@peculiar/x509";
import { writePrivateFile } from "./private-file.js";

/**
 * The agent's TLS key: made here (ECDSA P-256), kept in `<instance>/tls-key.pem` (0600) and
 * never sent anywhere; the control plane sees only certificate requests signed with it.
 */

cryptoProvider.set(webcrypto as unknown as Parameters<typeof cryptoProvider.set>[0]);
const EC_ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export const tlsKeyPath = (credentialsFile: string): string =>
  path.join(path.dirname(credentialsFile), "tls-key.pem");

/** The stored key (PEM), or a new one written first. */
export async function loadOrCreateTlsKey(file: string): Promise<string> {
  try {
    const pem = await readFile(file, "utf8");
    createPrivateKey(pem); // a damaged file is an error here, not a failed handshake later
    return pem;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  await writePrivateFile(file, pem);
  return pem;
}

/** A PKCS#10 request for the key: the control plane fills in the host's names itself. */
export async function certificateRequest(keyPem: string): Promise<string> {
  const priv = createPrivateKey(keyPem);
  const subtle = webcrypto.subtle;
  const privateKey = await subtle.importKey(
    "pkcs8",
    priv.export({ format: "der", type: "pkcs8" }),
    EC_ALG,
    false,
    ["sign"],
  );
  const publicKey = await subtle.importKey(
    "spki",
    createPublicKey(priv).export({ format: "der", type: "spki" }),
    EC_ALG,
    true,
    ["verify"],
  );
  const csr = await Pkcs10CertificateRequestGenerator.create({
    name: "CN=nestbox-agent",
    keys: { privateKey, publicKey } as unknown as Parameters<
      typeof Pkcs10CertificateRequestGenerator.create
    >[0]["keys"],
    signingAlgorithm: EC_ALG,
  });
  return csr.toString("pem");
}
