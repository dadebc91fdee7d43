/**
 * The E2B envd protocol version whose behaviour this envd implements. The control plane reports
 * it as `envdVersion`; the SDKs gate features on it (0.6.4 unlocks everything SDK 2.51 uses).
 */
export const ENVD_VERSION = "0.6.4";
