import { test, expect } from "@playwright/test";

test("the start page renders on the server and hydrates in the browser", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // Before any script runs, the server-rendered HTML already has the content.
  const html = await (await page.request.get("/")).text();
  expect(html).toContain("<h1>Tollgate</h1>");
  expect(html).toContain('data-hydrated="false"');

  await page.goto("/");
  await expect(page.getByRole("heading", { name: "Tollgate", level: 1 })).toBeVisible();
  // Only the hydrated wasm app flips this attribute.
  await expect(page.locator('section[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByTestId("config-generation")).toHaveText(/^\d+$/);

  // A client-side event handler works: refetching calls the server function.
  const refetch = page.waitForRequest((r) => r.url().includes("/api/") && r.method() === "POST");
  await page.getByRole("button", { name: "Refresh status" }).click();
  await refetch;
  await expect(page.getByTestId("config-ok")).toHaveText("succeeded");
  expect(errors).toEqual([]);
});
