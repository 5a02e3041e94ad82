// Plain Vite: Preact's JSX goes through esbuild's automatic runtime, so no
// framework plugin is needed. The build lands in dist/, which backend-api
// serves (UI_DIR); `npm run dev` proxies the API to a backend on :8000.
import { defineConfig } from 'vitest/config';

const backend = process.env.IMAGEFLOW_API ?? 'http://127.0.0.1:8000';

export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: true,
    emptyOutDir: true,
  },
  server: {
    proxy: Object.fromEntries(
      ['/v1', '/metrics', '/readyz', '/healthz', '/ui-config.json', '/openapi.json'].map((p) => [p, backend]),
    ),
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
