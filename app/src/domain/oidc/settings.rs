//! `auth:` in the config: local accounts on or off, and the OpenID provider,
//! each value checked while it is read so that errors carry their position.

use super::super::owner::Role;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// `auth:`: which ways of signing in the console offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Local accounts with passwords. When off, the password form and the
    /// `login` server function refuse; `/setup` and `tollgate create-admin`
    /// still work, for recovery.
    #[serde(default = "yes")]
    pub local: bool,
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
}

fn yes() -> bool {
    true
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            local: true,
            oidc: None,
        }
    }
}

/// `auth.oidc:`: one OpenID provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub issuer: Issuer,
    pub client_id: ClientId,
    /// The name of the environment variable holding the client secret (the
    /// secret itself is never in the file).
    pub client_secret_env: EnvName,
    #[serde(default)]
    pub display_name: Option<DisplayName>,
    /// Requested scopes; `openid` is always added.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// The claim whose values map to roles, e.g. `groups` or `role`.
    #[serde(default)]
    pub role_claim: Option<ClaimName>,
    #[serde(default)]
    pub roles: RoleMapping,
    /// Whether a person without an account gets one on first sign-in.
    #[serde(default)]
    pub create_users: bool,
    /// The role of an account created on first sign-in, and of anyone whose
    /// claim matches no mapping when `role_claim` is set.
    #[serde(default)]
    pub default_role: DefaultRole,
    /// Seconds of clock difference tolerated on `exp` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: Leeway,
}

fn default_leeway() -> Leeway {
    Leeway(60)
}

impl OidcSettings {
    /// What the sign-in button says.
    pub fn button_label(&self) -> String {
        format!(
            "Sign in with {}",
            self.display_name
                .as_ref()
                .map_or("single sign-on", |d| d.0.as_str())
        )
    }

    /// The scopes sent, space-separated, `openid` first and once.
    pub fn scope_param(&self) -> String {
        let mut out = vec!["openid".to_string()];
        for s in self.scopes.iter().flatten() {
            if !out.contains(&s.0) {
                out.push(s.0.clone());
            }
        }
        out.join(" ")
    }
}

/// `auth.oidc.roles`: claim values that make an admin or a manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    #[serde(default)]
    pub admin: Vec<ClaimValue>,
    #[serde(default)]
    pub manager: Vec<ClaimValue>,
}

/// `auth.oidc.default_role`: never admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRole {
    #[default]
    User,
    Manager,
}

impl DefaultRole {
    pub fn role(self) -> Role {
        match self {
            DefaultRole::User => Role::User,
            DefaultRole::Manager => Role::Manager,
        }
    }
}

/// Reads a string and checks it, so that the error carries the value's position.
fn checked_string<'de, D: Deserializer<'de>, T>(
    d: D,
    check: fn(String) -> Result<T, String>,
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    check(s).map_err(de::Error::custom)
}

fn no_controls(s: &str, what: &str, max: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    if s.chars().count() > max {
        return Err(format!("{what} is at most {max} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} cannot contain control characters"));
    }
    Ok(())
}

macro_rules! checked_newtype {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        pub struct $name(pub String);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                checked_string(d, |s| {
                    let check: fn(&str) -> Result<(), String> = $check;
                    check(&s)?;
                    Ok($name(s))
                })
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_newtype!(
    /// `auth.oidc.issuer`: an `https://` URL, or `http://` on loopback only.
    Issuer,
    |s| check_issuer(s)
);
checked_newtype!(
    /// `auth.oidc.client_id`.
    ClientId,
    |s| {
        no_controls(s, "client_id", 255)?;
        if s.chars().any(char::is_whitespace) {
            return Err("client_id cannot contain spaces".into());
        }
        Ok(())
    }
);
checked_newtype!(
    /// `auth.oidc.client_secret_env`: an environment variable name.
    EnvName,
    |s| {
        let ok = s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(())
        } else {
            Err(format!("`{s}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"))
        }
    }
);
checked_newtype!(
    /// `auth.oidc.display_name`: shown on the sign-in button.
    DisplayName,
    |s| no_controls(s, "display_name", 64)
);
checked_newtype!(
    /// One entry of `auth.oidc.scopes`.
    Scope,
    |s| {
        // RFC 6749 §3.3: printable ASCII except space, `"` and `\`.
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!("scope `{s}` must be 1 to 128 printable characters without spaces, `\"` or `\\`"))
        }
    }
);
checked_newtype!(
    /// `auth.oidc.role_claim`: a claim name.
    ClaimName,
    |s| {
        no_controls(s, "role_claim", 128)?;
        if s.chars().any(char::is_whitespace) {
            return Err("role_claim cannot contain spaces".into());
        }
        Ok(())
    }
);
checked_newtype!(
    /// A value under `auth.oidc.roles.admin` or `.manager`.
    ClaimValue,
    |s| no_controls(s, "a role value", 256)
);

/// `auth.oidc.leeway_secs`: 0 to 600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Leeway(pub u32);

impl<'de> Deserialize<'de> for Leeway {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(0..=600).contains(&v) {
            return Err(de::Error::custom(format!(
                "leeway_secs must be from 0 to 600, got {v}"
            )));
        }
        Ok(Leeway(v as u32))
    }
}

/// Whether `host` (as in a URL) is a loopback name.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The scheme and host of an absolute `http(s)` URL, if it is one.
fn scheme_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(_) => host.split_inclusive(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then_some((scheme, host))
}

fn check_issuer(s: &str) -> Result<(), String> {
    no_controls(s, "issuer", 512)?;
    if s.chars().any(char::is_whitespace) || s.contains(['?', '#']) {
        return Err("issuer must be a URL without spaces, query or fragment".into());
    }
    match scheme_host(s) {
        Some(("https", _)) => Ok(()),
        Some(("http", host)) if is_loopback(host) => Ok(()),
        Some(("http", _)) => Err(format!(
            "issuer `{s}` must use https:// (plain http:// is accepted only on loopback, for tests)"
        )),
        _ => Err(format!("issuer `{s}` must be an https:// URL")),
    }
}

/// Whether an endpoint a provider's discovery document names may be used
/// for an issuer: https, or http on loopback when the issuer is too.
pub fn endpoint_allowed(issuer: &str, endpoint: &str) -> bool {
    match (scheme_host(issuer), scheme_host(endpoint)) {
        (_, Some(("https", _))) => true,
        (Some(("http", _)), Some(("http", host))) => is_loopback(host),
        _ => false,
    }
}

/// The discovery document's address for an issuer (OpenID Connect
/// Discovery §4: the issuer, without a trailing `/`, then the well-known path).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}
