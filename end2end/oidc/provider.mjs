// A real OpenID provider (the `oidc-provider` package) on loopback, for the
// single sign-on journeys (tests/oidc.spec.ts). One client, `tollgate`, with
// the authorization code flow and PKCE required; its development sign-in
// page takes any of the accounts below (the password is not checked).
//
// Environment:
//   OIDC_PORT            port to listen on (127.0.0.1)
//   OIDC_REDIRECT_URI    the redirect URI registered for the client
//   OIDC_CLIENT_SECRET   the client secret
//   OIDC_TOKEN_CLOCK_SHIFT_SECONDS
//                        when set, the token endpoint runs with its clock that
//                        many seconds behind, so the ID tokens it signs were
//                        issued, and have expired, in the past (the provider's
//                        own pages and cookies keep the real time).
import Provider from "oidc-provider";
import { generateKeyPairSync } from "node:crypto";

const port = Number(process.env.OIDC_PORT ?? "3301");
const redirectUri = process.env.OIDC_REDIRECT_URI;
const clientSecret = process.env.OIDC_CLIENT_SECRET;
const shift = Number(process.env.OIDC_TOKEN_CLOCK_SHIFT_SECONDS ?? "0");
if (!redirectUri || !clientSecret) {
  console.error("OIDC_REDIRECT_URI and OIDC_CLIENT_SECRET are required");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  alice: { preferred_username: "alice", email: "alice@example.test", groups: ["tollgate-admins"] },
  bob: { preferred_username: "bob", email: "bob@example.test", groups: ["tollgate-managers"] },
  carol: { preferred_username: "carol", email: "carol@example.test", groups: [] },
};

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: `e2e-${port}`, alg: "RS256", use: "sig" };

const scopes = "openid profile email groups";

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "tollgate",
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ["end-to-end tests only, not a secret"] },
  scopes: scopes.split(" "),
  claims: {
    openid: ["sub"],
    profile: ["preferred_username"],
    email: ["email"],
    groups: ["groups"],
  },
  // The default, as OpenID Connect Core §5.4 says: with the code flow the
  // scopes' claims (name, email, groups) come from the userinfo endpoint,
  // not the ID token, so Tollgate asks it.
  conformIdTokenClaims: true,
  pkce: { methods: ["S256"], required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  // Tollgate is a first-party client: no consent page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(scopes);
    await grant.save();
    return grant;
  },
});

if (shift) {
  const realNow = Date.now;
  provider.use(async (ctx, next) => {
    if (ctx.path !== "/token") return next();
    Date.now = () => realNow() - shift * 1000;
    try {
      await next();
    } finally {
      Date.now = realNow;
    }
  });
}

provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc provider listening on ${issuer}`);
});
