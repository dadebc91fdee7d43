import adapter from "@sveltejs/adapter-static";

/** @type {import('@sveltejs/kit').Config} */
export default {
  kit: {
    // SPA: every page renders in the browser; the control plane answers unknown paths with
    // index.html. precompress writes .br/.gz twins the server sends as they are.
    adapter: adapter({
      pages: "build",
      assets: "build",
      fallback: "index.html",
      precompress: true,
    }),
    alias: { $api: "../sdk/src/client/api-types.ts" },
  },
};
