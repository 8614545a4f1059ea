import { defineConfig } from "@playwright/test";

// Runs against the real `tollgate` binary (built by the test script) on a
// fresh SQLite database, in Debian's Chromium. No browser is downloaded.
// TOLLGATE_E2E_BIN and TOLLGATE_E2E_CWD (read by start-server.sh) choose the
// binary and the directory it runs in.
const port = process.env.TOLLGATE_E2E_PORT ?? "3210";

export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  retries: 0,
  workers: 1,
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    screenshot: "only-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
      ],
    },
  },
  projects: [{ name: "chromium", use: { browserName: "chromium" } }],
  webServer: {
    command: `bash ./start-server.sh ${port}`,
    url: `http://127.0.0.1:${port}/healthz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe",
    stderr: "pipe",
  },
});
