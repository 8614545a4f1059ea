// Single sign-on with OpenID Connect, against a real OpenID provider (the
// `oidc-provider` package, end2end/oidc/provider.mjs) on loopback.
//
// Two pairs are started here, each a provider and a Tollgate configured
// with it as `auth.oidc`: one ordinary, and one whose token endpoint's clock
// runs two hours behind, so the ID tokens it signs have genuinely expired.
// The second Tollgate also has local accounts turned off.
import { test, expect, type Page, type BrowserContext } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

test.describe.configure({ mode: "serial" });

const ROOT = path.join(__dirname, "..", "..");
const BIN = process.env.TOLLGATE_E2E_BIN ?? path.join(ROOT, "target", "debug", "tollgate");
const SECRET = "end-to-end client secret, not a real one";
const port = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

type Pair = { provider: string; tollgate: string };
const MAIN: Pair = {
  provider: `http://127.0.0.1:${port("TOLLGATE_E2E_OIDC_PORT", 3301)}`,
  tollgate: `http://127.0.0.1:${port("TOLLGATE_E2E_SSO_PORT", 3311)}`,
};
const LATE: Pair = {
  provider: `http://127.0.0.1:${port("TOLLGATE_E2E_OIDC_LATE_PORT", 3302)}`,
  tollgate: `http://127.0.0.1:${port("TOLLGATE_E2E_SSO_LATE_PORT", 3312)}`,
};

const children: ChildProcess[] = [];

function start(name: string, command: string, args: string[], env: Record<string, string>, cwd: string) {
  const dir = path.join(ROOT, "end2end", ".run", name);
  fs.mkdirSync(dir, { recursive: true });
  const log = fs.openSync(path.join(dir, "output.log"), "w");
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", log, log] });
  children.push(child);
  return dir;
}

async function waitFor(url: string) {
  await expect
    .poll(async () => {
      try {
        return (await fetch(url)).status;
      } catch {
        return 0;
      }
    }, { timeout: 30_000 })
    .toBe(200);
}

function config(pair: Pair, local: boolean): string {
  return `# Written by tests/oidc.spec.ts.
models:
  dummy:
    provider: dummy
    price: { input: 0.1, output: 0.2 }
users:
  default:
    max: 10
    starting: 10
    model_access:
      whitelist: [dummy]
auth:
  local: ${local}
  oidc:
    issuer: ${pair.provider}
    client_id: tollgate
    client_secret_env: TOLLGATE_E2E_OIDC_SECRET
    display_name: Test IdP
    scopes: [profile, email, groups]
    role_claim: groups
    roles:
      admin: [tollgate-admins]
      manager: [tollgate-managers]
    create_users: true
`;
}

async function startPair(name: string, pair: Pair, opts: { local: boolean; clockShift?: number }) {
  start(
    `${name}-provider`,
    process.execPath,
    [path.join(ROOT, "end2end", "oidc", "provider.mjs")],
    {
      OIDC_PORT: new URL(pair.provider).port,
      OIDC_REDIRECT_URI: `${pair.tollgate}/auth/oidc/callback`,
      OIDC_CLIENT_SECRET: SECRET,
      OIDC_TOKEN_CLOCK_SHIFT_SECONDS: String(opts.clockShift ?? 0),
    },
    ROOT,
  );
  const dir = path.join(ROOT, "end2end", ".run", `${name}-tollgate`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "tollgate.yaml"), config(pair, opts.local));
  start(
    `${name}-tollgate`,
    BIN,
    [
      "serve",
      "--config", path.join(dir, "tollgate.yaml"),
      "--database-url", `sqlite://${dir}/tollgate.db`,
      "--listen", new URL(pair.tollgate).host,
    ],
    { TOLLGATE_E2E_OIDC_SECRET: SECRET },
    ROOT,
  );
  await waitFor(`${pair.provider}/.well-known/openid-configuration`);
  await waitFor(`${pair.tollgate}/healthz`);
}

test.beforeAll(async () => {
  test.setTimeout(90_000);
  await Promise.all([
    startPair("oidc-main", MAIN, { local: true }),
    startPair("oidc-late", LATE, { local: false, clockShift: 2 * 3600 }),
  ]);
});

test.afterAll(() => {
  for (const c of children) c.kill();
});

async function sessionCookie(context: BrowserContext) {
  return (await context.cookies()).find((c) => c.name === "tg_session");
}

/** From Tollgate's sign-in page through the provider's sign-in page. */
async function signInAtProvider(page: Page, pair: Pair, user: string) {
  await page.goto(`${pair.tollgate}/login`);
  await expect(page.locator('header[data-hydrated="true"]')).toBeVisible();
  await page.getByRole("link", { name: "Sign in with Test IdP" }).click();
  await expect(page).toHaveURL(new RegExp(`^${pair.provider}/interaction/`));
  await page.locator('input[name="login"]').fill(user);
  await page.locator('input[name="password"]').fill("any password");
  await page.getByRole("button", { name: "Sign-in" }).click();
}

async function signedInAs(page: Page, who: string, landing: string) {
  await expect(page).toHaveURL(`${MAIN.tollgate}${landing}`);
  await expect(page.getByTestId("signed-in-as")).toHaveText(who);
}

test("a sign-in: alice, in the admins group, lands on /clients as admin", async ({ page, context }) => {
  await signInAtProvider(page, MAIN, "alice");
  await signedInAs(page, "alice (admin)", "/clients");
  const cookie = await sessionCookie(context);
  expect(cookie?.httpOnly).toBe(true);
  expect(cookie?.sameSite).toBe("Lax");
  // The admin sees the account single sign-on created.
  await page.getByRole("link", { name: "Users" }).click();
  await expect(page.getByLabel("Role of alice")).toHaveValue("admin");
});

test("role mapping: bob (managers) is a manager, carol (no group) a user", async ({ browser }) => {
  for (const [user, who, landing] of [
    ["bob", "bob (manager)", "/clients"],
    ["carol", "carol (user)", "/me"],
  ]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await signInAtProvider(page, MAIN, user);
    await signedInAs(page, who, landing);
    await context.close();
  }
});

test("a forged state in the callback is refused and signs no one in", async ({ page, context }) => {
  // The provider's answer is taken on its way back (the sign-in form's
  // post and the redirects after it, fetched here), and the browser is sent
  // to the callback with its state changed.
  let genuine = "";
  await page.route(`${MAIN.provider}/interaction/**`, async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    const login = await route.fetch({ maxRedirects: 0 });
    const resume = await page.request.get(new URL(login.headers()["location"], MAIN.provider).toString(), {
      maxRedirects: 0,
    });
    const callback = new URL(resume.headers()["location"]);
    expect(callback.pathname).toBe("/auth/oidc/callback");
    genuine = callback.toString();
    const state = callback.searchParams.get("state") ?? "";
    callback.searchParams.set("state", state.slice(0, -4) + (state.endsWith("0000") ? "1111" : "0000"));
    await route.fulfill({ status: 303, headers: { location: callback.toString() } });
  });
  await signInAtProvider(page, MAIN, "carol");
  await expect(page).toHaveURL(`${MAIN.tollgate}/login?sso_error=state_invalid`);
  await expect(page.getByTestId("sso-error")).toHaveAttribute("data-reason", "state_invalid");
  await expect(page.getByRole("alert")).toContainText("does not match a sign-in this server started");
  expect(await sessionCookie(context)).toBeUndefined();

  // The untampered answer still works, once.
  await page.goto(genuine);
  await signedInAs(page, "carol (user)", "/me");
  await page.goto(genuine);
  await expect(page.getByTestId("sso-error")).toHaveAttribute("data-reason", "state_invalid");
});

test("an expired ID token is refused; with local accounts off there is no password form", async ({ page, context }) => {
  await page.goto(`${LATE.tollgate}/login`);
  await expect(page.getByRole("link", { name: "Sign in with Test IdP" })).toBeVisible();
  await expect(page.getByText("Password sign-in is turned off")).toBeVisible();
  await expect(page.getByLabel("Password")).toHaveCount(0);

  await signInAtProvider(page, LATE, "alice");
  await expect(page).toHaveURL(`${LATE.tollgate}/login?sso_error=token_expired`);
  await expect(page.getByTestId("sso-error")).toHaveAttribute("data-reason", "token_expired");
  await expect(page.getByRole("alert")).toContainText("ID token has expired");
  expect(await sessionCookie(context)).toBeUndefined();
  const log = fs.readFileSync(path.join(ROOT, "end2end", ".run", "oidc-late-tollgate", "output.log"), "utf8");
  expect(log).toContain("single sign-on refused (token_expired)");
});
