// @peculiar/x509 resolves its algorithms through tsyringe, which needs this polyfill first.
import "reflect-metadata";
import { createPrivateKey, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import {
  CONTROL_PLANE_CN,
  EKU_CLIENT_AUTH,
  EKU_SERVER_AUTH,
  HOST_ORGANIZATION,
} from "@nestbox/wire";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  cryptoProvider,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Pkcs10CertificateRequest,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";

/**
 * The control plane's certificate authority: ECDSA P-256, certificates built by @peculiar/x509
 * (no ASN.1 here). It signs each host's server certificate from the host's own CSR (the host's
 * private key never leaves it) and the control plane's short-lived client certificates.
 */

// This package's TypeScript has no DOM library: WebCrypto's types come from Node's.
type Key = webcrypto.CryptoKey;
type KeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;
cryptoProvider.set(webcrypto as unknown as Parameters<typeof cryptoProvider.set>[0]);
export const EC_ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 24 * 60 * 60 * 1000;
export const HOST_CERT_TTL_MS = 7 * DAY_MS;
export const CLIENT_CERT_TTL_MS = DAY_MS;
const CA_TTL_MS = 10 * 365 * DAY_MS;
/** Clocks of hosts and control plane may differ a little. */
const BACKDATE_MS = 5 * 60 * 1000;

export class CertificateRequestError extends Error {
  override name = "CertificateRequestError";
}

/** A certificate request whose signature and key type were checked. */
export interface CheckedRequest {
  publicKey: Pkcs10CertificateRequest["publicKey"];
}

export interface IssuedCertificate {
  certificatePem: string;
  notAfter: Date;
}

/** A private key and its certificate, PEM, as Node's TLS options take them. */
export interface TlsIdentity {
  keyPem: string;
  certPem: string;
  notAfter: Date;
}

const serial = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
// A positive serial: DER integers are signed.
const positive = (hex: string) => `7${hex.slice(1)}`;

export class CertificateAuthority {
  /** How long host certificates live (tests shorten it to make agents renew at once). */
  hostCertTtlMs = HOST_CERT_TTL_MS;

  private constructor(
    readonly certificate: X509Certificate,
    private readonly privateKey: Key,
  ) {}

  get certificatePem(): string {
    return this.certificate.toString("pem");
  }

  /** A new authority (first start). Returns it with its PKCS#8 private key to be stored. */
  static async create(): Promise<{ ca: CertificateAuthority; pkcs8: Uint8Array }> {
    const keys = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as KeyPair;
    const now = Date.now();
    const cert = await X509CertificateGenerator.createSelfSigned({
      serialNumber: positive(serial()),
      name: "CN=Nestbox control plane CA, O=nestbox",
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + CA_TTL_MS),
      signingAlgorithm: EC_ALG,
      keys,
      extensions: [
        new BasicConstraintsExtension(true, 0, true),
        new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
        await SubjectKeyIdentifierExtension.create(keys.publicKey, false),
      ],
    });
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
    return { ca: new CertificateAuthority(cert, keys.privateKey), pkcs8 };
  }

  /** An authority from its certificate (PEM) and PKCS#8 private key (DER or PEM). */
  static async load(
    certificatePem: string,
    key: Uint8Array | string,
  ): Promise<CertificateAuthority> {
    const cert = new X509Certificate(certificatePem);
    const der = typeof key === "string" ? pkcs8Der(key) : key;
    const privateKey = await crypto.subtle.importKey("pkcs8", der, EC_ALG, false, ["sign"]);
    const basic = cert.getExtension(BasicConstraintsExtension);
    if (!basic?.ca) throw new Error("the CA certificate is not a CA (basicConstraints cA=false)");
    return new CertificateAuthority(cert, privateKey);
  }

  /**
   * A certificate request checked before anything is spent on it (a registration token is
   * used once): PEM, self-signed by its key, an ECDSA P-256 key.
   */
  static async checkRequest(csrPem: string): Promise<CheckedRequest> {
    let csr: Pkcs10CertificateRequest;
    try {
      csr = new Pkcs10CertificateRequest(csrPem);
    } catch (err) {
      throw new CertificateRequestError(`csr is not a PEM certificate request (${String(err)})`);
    }
    if (!(await csr.verify()))
      throw new CertificateRequestError("csr's signature does not match its key");
    const alg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
    if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256")
      throw new CertificateRequestError("csr must carry an ECDSA P-256 key");
    return { publicKey: csr.publicKey };
  }

  /**
   * A host's server certificate for the checked request's key: the host id as its common name,
   * the host of the URL it advertised (IP or DNS name) as its subject alternative name,
   * serverAuth only.
   */
  issueHostCertificate(
    req: CheckedRequest,
    hostId: string,
    advertisedUrl: string,
  ): Promise<IssuedCertificate> {
    const host = new URL(advertisedUrl).hostname.replace(/^\[(.*)\]$/, "$1");
    const san = isIP(host)
      ? { type: "ip" as const, value: host }
      : { type: "dns" as const, value: host };
    return this.sign({
      subject: `CN=${hostId}, O=${HOST_ORGANIZATION}`,
      publicKey: req.publicKey,
      ttlMs: this.hostCertTtlMs,
      usage: EKU_SERVER_AUTH,
      san: [san],
    });
  }

  /** A fresh key and client certificate naming the control plane (clientAuth only). */
  async issueControlPlaneIdentity(ttlMs = CLIENT_CERT_TTL_MS): Promise<TlsIdentity> {
    const keys = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as KeyPair;
    const issued = await this.sign({
      subject: `CN=${CONTROL_PLANE_CN}, O=nestbox`,
      publicKey: keys.publicKey,
      ttlMs,
      usage: EKU_CLIENT_AUTH,
      san: [],
    });
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
    return { keyPem: pkcs8Pem(pkcs8), certPem: issued.certificatePem, notAfter: issued.notAfter };
  }

  private async sign(o: {
    subject: string;
    publicKey: Pkcs10CertificateRequest["publicKey"] | Key;
    ttlMs: number;
    usage: string;
    san: { type: "ip" | "dns"; value: string }[];
  }): Promise<IssuedCertificate> {
    const now = Date.now();
    // Whole seconds: what the certificate can hold, so the figure reported is its own.
    const notAfter = new Date(
      Math.floor(Math.min(now + o.ttlMs, this.certificate.notAfter.getTime()) / 1000) * 1000,
    );
    const cert = await X509CertificateGenerator.create({
      serialNumber: positive(serial()),
      subject: o.subject,
      issuer: this.certificate.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter,
      signingAlgorithm: EC_ALG,
      publicKey: o.publicKey,
      signingKey: this.privateKey,
      extensions: [
        new BasicConstraintsExtension(false, undefined, true),
        new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
        new ExtendedKeyUsageExtension([o.usage], false),
        ...(o.san.length ? [new SubjectAlternativeNameExtension(o.san, false)] : []),
        await AuthorityKeyIdentifierExtension.create(this.certificate, false),
      ],
    });
    return { certificatePem: cert.toString("pem"), notAfter };
  }
}

/** PKCS#8 DER → PEM, and PEM → DER, by Node's own key parser. */
export const pkcs8Pem = (der: Uint8Array): string =>
  createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" })
    .export({ format: "pem", type: "pkcs8" })
    .toString();
export const pkcs8Der = (pem: string): Uint8Array =>
  new Uint8Array(createPrivateKey(pem).export({ format: "der", type: "pkcs8" }));
