// rackflow's pages in Airflow's UI: one UMD bundle registered as several `react_apps` (see README.md).
// React, React Router, Chakra UI and Emotion are not bundled: Airflow's UI sets them on globalThis, so
// the pages render inside Airflow's own React tree with its Chakra theme (light and dark).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

const GLOBALS: Record<string, string> = {
  react: "React",
  "react-dom": "ReactDOM",
  "react/jsx-runtime": "ReactJSXRuntime",
  "react-router-dom": "ReactRouterDOM",
  "react-router": "ReactRouterDOM",
  "@chakra-ui/react": "ChakraUI",
  "@emotion/react": "EmotionReact",
};

export default defineConfig({
  plugins: [react()],
  // The bundle runs in a browser (no `process`); tests run React's development build (it has `act`).
  define: process.env.VITEST ? {} : { "process.env.NODE_ENV": JSON.stringify("production") },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    lib: {
      entry: "src/main.tsx",
      formats: ["umd"],
      name: "AirflowPlugin",
      fileName: () => "rackflow.umd.js",
    },
    rollupOptions: {
      external: Object.keys(GLOBALS),
      output: { globals: GLOBALS },
    },
  },
  test: {
    environment: "happy-dom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
