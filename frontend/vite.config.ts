// The build lands in the Python package (src/cadenza/ui/static/, committed) so that pip users
// need no Node; `make ui` rebuilds it. `npm run dev` proxies the API to a running
// `cadenza server` on the default port.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../src/cadenza/ui/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: { "/api": "http://127.0.0.1:8321" },
  },
});
