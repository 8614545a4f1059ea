// Page objects for the web console: role and label selectors only.
import { expect, type Page, type APIRequestContext } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";

export const RUN_DIR = path.join(__dirname, "..", "..", ".run");
export const CONFIG = path.join(RUN_DIR, "tollgate.yaml");

export function setupAddress(): string {
  const log = fs.readFileSync(path.join(RUN_DIR, "server.log"), "utf8");
  const m = log.match(/tollgate setup address: (\S+)/);
  if (!m) throw new Error("no setup address in the server log");
  return new URL(m[1]).pathname + new URL(m[1]).search;
}

export class Console {
  constructor(readonly page: Page) {}

  /** Opens a page and waits until the wasm app has hydrated it. */
  async goto(url: string) {
    await this.page.goto(url);
    await expect(this.page.locator('header[data-hydrated="true"]')).toBeVisible();
  }

  async signIn(username: string, password: string) {
    await this.goto("/login");
    await this.page.getByLabel("Username").fill(username);
    await this.page.getByLabel("Password").fill(password);
    await this.page.getByRole("button", { name: "Sign in" }).click();
    await expect(this.page.getByTestId("signed-in-as")).toContainText(username);
  }

  async signOut() {
    await this.page.getByRole("button", { name: "Sign out" }).click();
    await expect(this.page.getByRole("heading", { name: "Sign in" })).toBeVisible();
    await expect(this.page.getByRole("link", { name: "Sign in" })).toBeVisible();
  }

  async createClient(name: string) {
    await this.goto("/clients");
    await this.page.getByLabel("Name").fill(name);
    await this.page.getByRole("button", { name: "Create client" }).click();
    await expect(this.page.getByRole("heading", { name: `Client ${name}` })).toBeVisible();
  }

  async openClient(name: string) {
    await this.goto(`/clients/${name}`);
    await expect(this.page.getByRole("heading", { name: `Client ${name}` })).toBeVisible();
  }

  modelRow(model: string) {
    return this.page.locator(`tr[data-model="${model}"]`);
  }

  /** Opens a model's consent disclosure and presses its button. */
  async consent(model: string, summary: string, button: string) {
    const row = this.modelRow(model);
    const btn = row.getByRole("button", { name: `${button} for ${model}` });
    await expect(async () => {
      if (!(await btn.isVisible())) await row.locator("summary", { hasText: summary }).click();
      await expect(btn).toBeVisible({ timeout: 1000 });
    }).toPass({ timeout: 10_000 });
    await expect(row).toContainText("Prompts sent to this model are kept for 30 days.");
    await btn.click();
  }

  async createKey(label: string): Promise<string> {
    await this.page.getByLabel("Label").fill(label);
    await this.page.getByRole("button", { name: "Create key" }).click();
    const key = this.page.getByTestId("new-key").first();
    await expect(key).toHaveText(/^tg_/);
    return (await key.textContent())!.trim();
  }

  async createUser(username: string, role: string, password: string) {
    await this.goto("/users");
    const form = this.page.locator("section", { has: this.page.getByRole("heading", { name: "New user" }) });
    await form.getByLabel("Username").fill(username);
    await form.getByRole("combobox").selectOption(role);
    await form.getByLabel("Initial password").fill(password);
    await this.page.getByRole("button", { name: "Create user" }).click();
    await expect(this.page.locator(`tr[data-user="${username}"]`)).toBeVisible();
  }
}

export async function chat(request: APIRequestContext, key: string, model: string) {
  const r = await request.post("/v1/chat/completions", {
    headers: { Authorization: `Bearer ${key}` },
    data: { model, messages: [{ role: "user", content: "hello from the journey" }] },
  });
  const body = await r.json();
  return { status: r.status(), code: body?.error?.code as string | undefined, body };
}
