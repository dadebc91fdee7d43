import { sveltekit } from "@sveltejs/kit/vite";
import tailwindcss from "@tailwindcss/vite";
import { defineConfig } from "vite";

// `npm run dev`: the API lives on a running control plane; the dev server forwards to it so
// the browser still talks to one origin (cookies, SSE and WebSockets included).
const target = process.env.NESTBOX_API_URL ?? "http://127.0.0.1:3000";
const proxy = { target, changeOrigin: false, ws: true };

export default defineConfig({
  plugins: [tailwindcss(), sveltekit()],
  // Rolldown's plugin-timing note blames kit's own adapter step on every build: noise in setup.
  build: { rolldownOptions: { checks: { pluginTimings: false } } },
  server: { proxy: { "/v1": proxy, "/openapi.json": proxy, "/docs": proxy } },
});
