import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// In production the gateway serves dist/ at the same origin as Socket.IO and the
// REST API. `npm run dev` proxies those paths to a gateway on :8080 so the app
// is same-origin in development too.
const gateway = process.env.LIVELINE_GATEWAY ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  // liveline's wasm-bindgen glue loads its .wasm via `new URL(..., import.meta.url)`;
  // pre-bundling would break that path in dev.
  optimizeDeps: { exclude: ['liveline-client'] },
  server: {
    proxy: {
      '/api': gateway,
      '/socket.io': { target: gateway, ws: true },
    },
  },
  build: { outDir: 'dist', target: 'es2022' },
});
