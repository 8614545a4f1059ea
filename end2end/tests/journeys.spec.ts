import { test, expect } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Console, CONFIG, chat, setupAddress } from "./pages/console";

// The journeys build on each other (the first creates the admin), so they run in order.
test.describe.configure({ mode: "serial" });

const ADMIN = { name: "ada", password: "correct horse battery" };
const MANAGER = { name: "mia", password: "manager password 1" };
const PLAIN = { name: "ulla", password: "plain user password" };
const SHOTS = path.join(__dirname, "..", "..", "docs", "screenshots");
let managerKey = "";

async function shot(page: import("@playwright/test").Page, name: string) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

function editConfig(edit: (text: string) => string) {
  fs.writeFileSync(CONFIG, edit(fs.readFileSync(CONFIG, "utf8")));
}

test("1. the first admin is set up with the token, signs out and signs in again", async ({ page }) => {
  const c = new Console(page);
  await c.goto(setupAddress());
  await page.getByLabel("Username").fill(ADMIN.name);
  await page.getByLabel("Password (at least 10 characters)").fill(ADMIN.password);
  await page.getByRole("button", { name: "Create admin" }).click();
  await expect(page.getByTestId("signed-in-as")).toHaveText(`${ADMIN.name} (admin)`);
  await c.signOut();
  // The token works once.
  await c.goto(setupAddress());
  await expect(page.getByText("Setup is done.")).toBeVisible();
  await c.signIn(ADMIN.name, ADMIN.password);
});

test("2. creating clients applies their named entry or the defaults at once", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(ADMIN.name, ADMIN.password);
  await c.createClient("research-bot");
  await expect(page.getByTestId("balance").first()).toHaveText("500");
  await expect(page.getByTestId("settings-source")).toHaveText("named entry");
  await expect(c.modelRow("dummy").getByTestId("verdict")).toHaveText("allowed");
  await expect(c.modelRow("dummy")).toContainText("model_access.default is whitelist");

  await c.createClient("other");
  await expect(page.getByTestId("balance").first()).toHaveText("100");
  await expect(page.getByTestId("settings-source")).toHaveText("defaults");
  await expect(c.modelRow("dummy").getByTestId("verdict")).toHaveText("allowed");
  await expect(c.modelRow("gray-dummy").getByTestId("verdict")).toHaveText("consent needed");

  // A duplicate is refused with a message.
  await c.goto("/clients");
  await page.getByLabel("Name").fill("other");
  await page.getByRole("button", { name: "Create client" }).click();
  await expect(page.getByRole("alert")).toContainText("already exists");
  await expect(page.locator('tr[data-client="research-bot"]')).toContainText("named entry");
  await shot(page, "clients");
});

test("3. YAML edits apply live; a bad file shows its error and changes nothing", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(ADMIN.name, ADMIN.password);
  await c.goto("/config");
  const before = Number(await page.getByTestId("generation").textContent());

  editConfig((t) => t.replace("max: 500.0", "max: 800.0"));
  await expect(async () => {
    await c.openClient("research-bot");
    await expect(page.getByTestId("max").first()).toHaveText("800", { timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await c.goto("/config");
  await expect(page.getByTestId("generation")).toHaveText(String(before + 1));

  const good = fs.readFileSync(CONFIG, "utf8");
  editConfig((t) => t.replace("max: 800.0", "max: lots"));
  await expect(async () => {
    await c.goto("/config");
    await expect(page.getByTestId("reload-status")).toHaveText(/failed/, { timeout: 500 });
  }).toPass({ timeout: 10_000 });
  await expect(page.getByTestId("config-error")).toContainText("tollgate.yaml:");
  await expect(page.getByTestId("config-error")).toContainText("clients.research-bot.max");
  await expect(page.getByTestId("generation")).toHaveText(String(before + 1));
  await shot(page, "config");
  await c.openClient("research-bot");
  await expect(page.getByTestId("max").first()).toHaveText("800");
  fs.writeFileSync(CONFIG, good.replace("max: 800.0", "max: 801.0"));
  await expect(async () => {
    await c.goto("/config");
    await expect(page.getByTestId("reload-status")).toHaveText("succeeded", { timeout: 500 });
  }).toPass({ timeout: 10_000 });
});

test("4. an assigned manager sees only their client and issues a working key", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(ADMIN.name, ADMIN.password);
  await c.createUser(MANAGER.name, "manager", MANAGER.password);
  await shot(page, "users");
  await c.openClient("other");
  await page.getByLabel("Username").fill(MANAGER.name);
  await page.getByRole("button", { name: "Add manager" }).click();
  await expect(page.locator(".managers")).toContainText(MANAGER.name);
  await c.signOut();

  await c.signIn(MANAGER.name, MANAGER.password);
  await c.goto("/clients");
  await expect(page.locator("tr[data-client]")).toHaveCount(1);
  await expect(page.locator('tr[data-client="other"]')).toBeVisible();
  await c.openClient("other");
  managerKey = await c.createKey("journey key");
  await shot(page, "client");
  const r = await chat(page.request, managerKey, "dummy");
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.choices[0].message.content).toContain("Dummy reply");
  await c.goto("/clients/research-bot");
  await expect(page.getByRole("alert")).toContainText("No such client");
});

test("5. a graylisted model works only while consent is recorded", async ({ page }) => {
  const c = new Console(page);
  expect((await chat(page.request, managerKey, "gray-dummy")).code).toBe("consent_required");
  await c.signIn(MANAGER.name, MANAGER.password);
  await c.openClient("other");
  const row = c.modelRow("gray-dummy");
  await c.consent("gray-dummy", "Record consent…", "I consent");
  await expect(row.getByTestId("verdict")).toHaveText("allowed");
  expect((await chat(page.request, managerKey, "gray-dummy")).status).toBe(200);

  await c.consent("gray-dummy", "Revoke consent", "Revoke consent");
  await expect(row.getByTestId("verdict")).toHaveText("consent needed");
  expect((await chat(page.request, managerKey, "gray-dummy")).code).toBe("consent_required");
});

test("6. a revoked key gets 401 on the next call", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(MANAGER.name, MANAGER.password);
  await c.openClient("other");
  const prefix = managerKey.slice(0, 11);
  await page.getByRole("button", { name: `Revoke ${prefix}` }).click();
  await expect(page.locator(`tr[data-prefix="${prefix}"]`)).toContainText("revoked");
  const r = await chat(page.request, managerKey, "dummy");
  expect(r.status).toBe(401);
  expect(r.code).toBe("invalid_api_key");
});

test("7. a plain user cannot reach admin pages or other people's clients", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(ADMIN.name, ADMIN.password);
  await c.createUser(PLAIN.name, "user", PLAIN.password);
  await c.signOut();
  await c.signIn(PLAIN.name, PLAIN.password);
  await expect(page.getByRole("heading", { name: `My account (${PLAIN.name})` })).toBeVisible();
  await shot(page, "me");
  for (const [url, text] of [
    ["/users", "Only admins may do this."],
    ["/config", "Only admins may do this."],
    ["/deployments", "Only admins may do this."],
    ["/audit", "Only admins may do this."],
    ["/clients/other", "No such client"],
  ]) {
    await c.goto(url);
    await expect(page.getByRole("alert")).toContainText(text);
  }
  // By server function, too.
  for (const [fn, form, status] of [
    ["list_users", {}, 403],
    ["config_overview", {}, 403],
    ["deployment_health", {}, 403],
    ["client_detail", { name: "other" }, 404],
    ["create_client", { name: "sneaky" }, 403],
  ] as const) {
    const r = await page.request.post(`/api/${fn}`, { form, headers: { Accept: "application/json" } });
    expect(r.status(), fn).toBe(status);
  }
  await c.goto("/nowhere");
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
});

test("8. an admin finds their own sign-in in the audit trail", async ({ page }) => {
  const c = new Console(page);
  await c.signIn(ADMIN.name, ADMIN.password);
  await page.getByRole("link", { name: "Audit" }).click();
  await expect(page.getByRole("heading", { name: "Audit trail" })).toBeVisible();
  const signIns = page.locator('tr[data-action="sign_in"]');
  await expect(signIns.first()).toContainText(ADMIN.name);
  await expect(signIns.first()).toContainText("127.0.0.1");
  // The filter keeps only what it names.
  await page.getByLabel("Action").selectOption("user_created");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page.getByTestId("audit-row").first()).toContainText(`user:${PLAIN.name}`);
  await expect(page.locator('tr[data-testid="audit-row"]:not([data-action="user_created"])')).toHaveCount(0);
  await shot(page, "audit");
});
