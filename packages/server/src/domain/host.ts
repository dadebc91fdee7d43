/** Host rules shared by the host routes and the sandbox create route. */

/** A host tag (`gpu`, `eu-west`): lowercase, 1-63 characters. */
export const HOST_TAG_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const HOST_TAG_MESSAGE =
  "must be 1-63 characters a-z, 0-9, . _ - (starting with a letter or digit)";
/** How many tags one create may require. */
export const MAX_HOST_TAGS = 16;
