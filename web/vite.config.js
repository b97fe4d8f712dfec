import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` serves the front end with hot reload and forwards the
// server's routes to a running hearth (HEARTH_URL, default
// http://127.0.0.1:3000). The production build goes to static/app, which
// web/embed.go embeds into the hearth binary (see the comment there).
const target = process.env.HEARTH_URL || 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  // The server mounts the dashboard under /app/: the E2B-compatible API owns
  // /sandboxes and /templates at the root, which are also client routes here.
  // Assets load from /app/assets/..., and the router's basename follows this.
  base: '/app/',
  build: {
    outDir: 'static/app',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      '/v1': target,
      '/auth': target,
      '/ui': target,
      '/ws': { target, ws: true },
    },
  },
});
