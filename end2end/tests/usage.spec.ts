import { test, expect } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Console, chat, setupAddress } from "./pages/console";

// The usage explorer in the browser: an admin's calls show in the chart and
// the top spenders, and a click drills down to the calls themselves. Runs
// alone on a fresh server, or after the journeys (then their admin exists).
const ADMIN = { name: "ada", password: "correct horse battery" };
const SHOTS = path.join(__dirname, "..", "..", "docs", "screenshots");

test("the usage explorer charts spend and drills down to the calls", async ({ page }) => {
  const c = new Console(page);
  await c.goto(setupAddress());
  if (await page.getByRole("button", { name: "Create admin" }).isVisible()) {
    await page.getByLabel("Username").fill(ADMIN.name);
    await page.getByLabel("Password (at least 10 characters)").fill(ADMIN.password);
    await page.getByRole("button", { name: "Create admin" }).click();
    await expect(page.getByTestId("signed-in-as")).toHaveText(`${ADMIN.name} (admin)`);
  } else {
    await c.signIn(ADMIN.name, ADMIN.password);
  }
  await c.createClient("usage-bot");
  const key = await c.createKey("usage journey");
  for (let i = 0; i < 3; i++) expect((await chat(page.request, key, "dummy")).status).toBe(200);

  await c.goto("/");
  await page.getByRole("link", { name: "Usage" }).click();
  await expect(page.getByRole("heading", { name: "Usage" })).toBeVisible();
  const row = page.locator('tr[data-group="usage-bot"]');
  await expect(async () => {
    await c.goto("/usage");
    await expect(row).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await expect(page.getByTestId("usage-chart").locator("rect").first()).toBeVisible();
  await expect(row.getByRole("cell").nth(2)).toHaveText("3");
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, "usage.png"), fullPage: true });

  // Grouped by model, then the client's own calls.
  await page.getByLabel("Group by").selectOption("model");
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page.locator('tr[data-group="dummy"]')).toBeVisible();
  await c.goto("/usage");
  await row.getByRole("link", { name: "usage-bot" }).click();
  await expect(page.getByRole("heading", { name: /Calls: client usage-bot/ })).toBeVisible();
  await expect(page.getByTestId("calls").locator("tbody tr")).toHaveCount(3);

  // A bad range is a message on the page, not a blank one.
  await c.goto("/usage?from=2026-02-01&to=2026-01-01");
  await expect(page.getByRole("alert")).toContainText("before the start date");
});
