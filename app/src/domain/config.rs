//! The configuration model: what `tollgate.yaml` may say, how each value is
//! validated while it is read (so that errors carry the file position), and
//! the effective settings each client or user ends up with.
//!
//! Semantics (see docs/configuration.md): a named entry replaces `default`
//! completely. A field omitted from an entry is not inherited: no `max` means
//! blocked, no `refresh`/`starting` means 0, no `model_access` denies every
//! model, a `model_access` without `default` denies unlisted models, and no
//! `rate_limits` means no rate limit.

use super::bound::MediaCosts;
use super::deployment::{ProviderFields, ProviderKind, RawDeployment, ResponsesApi};
use super::money::coins_to_micro;
use super::names::validate_name;
use super::policy::{AccessMode, AccessPolicy};
use super::pricing::Price;
use super::rate::{RateLimits, MAX_LIMIT};
use super::time::{parse_duration_ms, DAY_MS};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The ceiling of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolLimit {
    /// `max: -2`: never refused for coins, never decremented.
    Unlimited,
    /// A ceiling in micro-coins; `Limited(0)` is a blocked pool.
    Limited(i64),
}

impl PoolLimit {
    pub fn is_blocked(self) -> bool {
        self == PoolLimit::Limited(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSettings {
    pub limit: PoolLimit,
    /// Micro-coins added per hour.
    pub refresh_micro: i64,
    /// Balance of a pool when it is first created (clamped to the limit).
    pub starting_micro: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSettings {
    pub pool: PoolSettings,
    pub access: AccessPolicy,
    /// Requests and tokens per minute; omitted means unlimited.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

impl OwnerSettings {
    /// What an entry with every field omitted means: blocked, everything denied.
    pub fn empty() -> Self {
        OwnerSettings {
            pool: PoolSettings {
                limit: PoolLimit::Limited(0),
                refresh_micro: 0,
                starting_micro: 0,
            },
            access: AccessPolicy::deny_all(),
            rate_limits: RateLimits::NONE,
        }
    }
}

/// Where an owner's settings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettingsSource {
    Named,
    Default,
}

impl SettingsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingsSource::Named => "named",
            SettingsSource::Default => "default",
        }
    }
}

/// `clients:` or `users:`: a `default` entry plus named entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub default: OwnerSettings,
    pub named: BTreeMap<String, OwnerSettings>,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            default: OwnerSettings::empty(),
            named: BTreeMap::new(),
        }
    }
}

impl Section {
    /// The named entry for `name` if there is one, else the defaults.
    pub fn settings_for(&self, name: &str) -> (&OwnerSettings, SettingsSource) {
        match self.named.get(name) {
            Some(s) => (s, SettingsSource::Named),
            None => (&self.default, SettingsSource::Default),
        }
    }
}

pub use super::deployment::{Deployment, Provider, ANTHROPIC_BASE_URL};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// Where calls go: one or more upstreams of one provider kind.
    pub deployments: Vec<Deployment>,
    /// Models tried in order when every deployment failed (not their own
    /// fallbacks in turn).
    pub fallbacks: Vec<String>,
    pub price: Price,
    pub max_output_tokens: Option<u32>,
    pub consent_notice: Option<String>,
    /// Total time allowed for one call, retries and streaming included.
    pub timeout_secs: Option<u32>,
    /// Tokens one image, audio or file part may cost; parts of a kind with
    /// no declared cost are refused.
    pub media: MediaCosts,
    /// Request fields forwarded although the gateway cannot bound their
    /// cost (`options.KEY` for a key of Ollama's `options`).
    pub pass_through: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub responses: Option<ResponsesSettings>,
    #[serde(default)]
    pub metrics: Option<MetricsSettings>,
}

impl ServerSettings {
    /// How long a stored Responses API response is kept, in milliseconds.
    pub fn responses_retention_ms(&self) -> i64 {
        self.responses
            .as_ref()
            .and_then(|r| r.retention)
            .map_or(Retention::DEFAULT_MS, Retention::ms)
    }
}

/// `server.metrics`: who may read `GET /metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// The bearer token a scraper presents; without one, only loopback may scrape.
    #[serde(default, skip_serializing)]
    pub token: Option<MetricsToken>,
}

/// `server.metrics.token`: at least 16 characters, no whitespace. Its
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MetricsToken(String);

impl MetricsToken {
    pub const MIN_LEN: usize = 16;

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MetricsToken {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.chars().count() < Self::MIN_LEN || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "the metrics token must be at least {} characters with no spaces",
                Self::MIN_LEN
            ));
        }
        Ok(MetricsToken(s))
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

/// `server.responses`: responses stored for the Responses API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesSettings {
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// `server.responses.retention`: how long a stored response is kept after
/// it was created, written like a key lifetime (`30d`, `12h`, `90m`, `3600s`;
/// a bare number counts days). At least a minute: a shorter retention would
/// lose a conversation between two turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(i64);

impl Retention {
    /// OpenAI keeps stored responses for 30 days.
    pub const DEFAULT_MS: i64 = 30 * DAY_MS;
    pub const MIN_MS: i64 = 60_000;

    pub fn ms(self) -> i64 {
        self.0
    }

    /// Reads a retention as written in the file.
    pub fn parse(text: &str) -> Result<Retention, String> {
        let ms = parse_duration_ms(text).ok_or_else(|| {
            format!(
                "retention must be a positive duration such as `30d`, `12h`, `90m` or `3600s` (a bare number counts days), got `{text}`"
            )
        })?;
        if ms < Self::MIN_MS {
            return Err(format!(
                "retention must be at least 1 minute (`1m`), got `{text}`"
            ));
        }
        Ok(Retention(ms))
    }
}

impl Serialize for Retention {
    /// As seconds, which reads back to the same value: every retention the
    /// file can give is a whole number of seconds.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0 / 1000))
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `30d`, `12h`, `90m` or `3600s`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Retention, E> {
                Retention::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Retention, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Retention, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Retention, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub server: ServerSettings,
    pub models: BTreeMap<String, ModelSpec>,
    pub clients: Section,
    pub users: Section,
    /// Budget alerts; `None` without an `alerts:` section.
    #[serde(default)]
    pub alerts: Option<AlertSettings>,
    /// `auth:`: local accounts and single sign-on.
    #[serde(default)]
    pub auth: super::oidc::AuthSettings,
}

/// A problem that does not stop the config from loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
    /// The line the path points at in the file, when it can be found.
    #[serde(default)]
    pub line: Option<usize>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Warning {
    /// `FILE:LINE: PATH: message`, or `FILE: PATH: message` without a line.
    pub fn located(&self, file: &str) -> String {
        match self.line {
            Some(l) => format!("{file}:{l}: {self}"),
            None => format!("{file}: {self}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The file's shape. Each value type checks itself inside its serde visitor so
// that the YAML reader can attach the line and column of the offending value.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<ServerSettings>,
    #[serde(default, deserialize_with = "unique_entries")]
    pub models: Option<BTreeMap<EntryName, RawModel>>,
    #[serde(default, deserialize_with = "unique_entries")]
    pub clients: Option<BTreeMap<EntryName, Option<RawEntry>>>,
    #[serde(default, deserialize_with = "unique_entries")]
    pub users: Option<BTreeMap<EntryName, Option<RawEntry>>>,
    #[serde(default)]
    pub alerts: Option<RawAlerts>,
    pub auth: Option<super::oidc::AuthSettings>,
}

/// Reads a mapping of entries, refusing a name that appears twice. A plain
/// map would keep the later entry silently, hiding a client, user or model
/// configured twice.
fn unique_entries<'de, D, T>(d: D) -> Result<Option<BTreeMap<EntryName, T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Entries<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
        type Value = Option<BTreeMap<EntryName, T>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of names to entries")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = m.next_key::<EntryName>()? {
                if out.contains_key(&name) {
                    // Refused while reading the second entry, so the error
                    // carries its position and path.
                    m.next_value_seed(Duplicate(&name.0))?;
                }
                let value = m.next_value()?;
                out.insert(name, value);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(Entries(std::marker::PhantomData))
}

/// Rejects whatever value follows a name that was already given.
struct Duplicate<'a>(&'a str);

impl Duplicate<'_> {
    fn refuse<E: de::Error>(&self) -> E {
        E::custom(format!(
            "`{}` appears twice; keep one entry (the second would silently replace the first)",
            self.0
        ))
    }
}

impl<'de> de::DeserializeSeed<'de> for Duplicate<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Duplicate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "no second entry named `{}`", self.0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(self.refuse())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.refuse())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.refuse())
    }
}

/// A key under `models`, `clients` or `users`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryName(pub String);

impl<'de> Deserialize<'de> for EntryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EntryName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name of letters, digits, `.`, `_` and `-`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EntryName, E> {
                validate_name(v).map_err(E::custom)?;
                Ok(EntryName(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EntryName, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EntryName, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_str(V)
    }
}

/// `max`: coins, ≥ 0 or exactly -2 (unlimited).
#[derive(Debug, Clone, Copy)]
pub struct MaxCoins(pub PoolLimit);

/// `refresh`, `starting`, prices: coins ≥ 0.
#[derive(Debug, Clone, Copy)]
pub struct Coins(pub i64);

fn number_visitor<'de, D, T>(
    d: D,
    what: &'static str,
    check: fn(f64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        check: fn(f64) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_f64(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_f64(v as f64)
        }
    }
    d.deserialize_f64(V { what, check })
}

impl<'de> Deserialize<'de> for MaxCoins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_visitor(d, "a coin amount ≥ 0, or -2 for unlimited", |v| {
            if v == -2.0 {
                return Ok(MaxCoins(PoolLimit::Unlimited));
            }
            if v < 0.0 {
                return Err(format!(
                    "max must be ≥ 0 or exactly -2 (unlimited), got {v}"
                ));
            }
            coins_to_micro(v)
                .map(|m| MaxCoins(PoolLimit::Limited(m)))
                .ok_or_else(|| format!("max {v} is out of range"))
        })
    }
}

impl<'de> Deserialize<'de> for Coins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_visitor(d, "a coin amount ≥ 0", |v| {
            if v < 0.0 {
                return Err(format!("must be ≥ 0, got {v}"));
            }
            coins_to_micro(v)
                .map(Coins)
                .ok_or_else(|| format!("{v} is out of range"))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub max: Option<MaxCoins>,
    pub refresh: Option<Coins>,
    pub starting: Option<Coins>,
    pub model_access: Option<RawAccess>,
    #[serde(default)]
    pub rate_limits: Option<RawRateLimits>,
}

/// `rate_limits:` on an entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    #[serde(default)]
    pub requests_per_minute: Option<PerMinute>,
    #[serde(default)]
    pub tokens_per_minute: Option<PerMinute>,
}

/// A limit per minute: a whole number ≥ 1.
#[derive(Debug, Clone, Copy)]
pub struct PerMinute(pub u64);

impl<'de> Deserialize<'de> for PerMinute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_visitor(d, "a whole number ≥ 1", |v| {
            if v.fract() != 0.0 || !(1.0..=MAX_LIMIT as f64).contains(&v) {
                return Err(format!(
                    "must be a whole number from 1 to {MAX_LIMIT} (omit the field for no limit), got {v}"
                ));
            }
            Ok(PerMinute(v as u64))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub default: Option<AccessMode>,
    #[serde(default)]
    pub whitelist: Option<Vec<String>>,
    #[serde(default)]
    pub blacklist: Option<Vec<String>>,
    #[serde(default)]
    pub graylist: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: Coins,
    pub output: Coins,
    #[serde(default)]
    pub request: Option<Coins>,
    /// Cached prompt tokens; the input price when omitted.
    #[serde(default)]
    pub cached_input: Option<Coins>,
    /// Prompt tokens written to the provider's cache; the input price when omitted.
    #[serde(default)]
    pub cache_write: Option<Coins>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawModelFields")]
pub struct RawModel {
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<String>,
    pub price: Price,
    pub max_output_tokens: Option<u32>,
    pub consent_notice: Option<String>,
    pub timeout_secs: Option<u32>,
    pub media: MediaCosts,
    pub pass_through: BTreeSet<String>,
}

/// `media:` on a model: tokens one part of each kind may cost at most.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub image: Option<u32>,
    pub audio: Option<u32>,
    pub file: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelFields {
    pub provider: Option<ProviderKind>,
    pub price: RawPrice,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub responses_api: Option<ResponsesApi>,
    #[serde(default)]
    pub deployments: Option<Vec<RawDeployment>>,
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    pub max_output_tokens: Option<u32>,
    pub consent_notice: Option<String>,
    pub timeout_secs: Option<u32>,
    #[serde(default)]
    pub media: Option<RawMedia>,
    #[serde(default)]
    pub pass_through: Option<Vec<FieldName>>,
}

/// A request field name under `pass_through`: checked while it is read, so
/// an error carries its own line and position in the list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldName(pub String);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 64 || s.chars().any(char::is_whitespace) {
            return Err(de::Error::custom(format!(
                "pass_through entry `{s}` must be a request field name of 1 to 64 characters without spaces"
            )));
        }
        Ok(FieldName(s))
    }
}

impl RawModelFields {
    /// The model's deployments: the `deployments:` list, or the one
    /// upstream its own provider fields describe.
    fn deployments(&mut self) -> Result<Vec<Deployment>, String> {
        let single = ProviderFields {
            provider: self.provider.take(),
            base_url: self.base_url.take(),
            api_key_env: self.api_key_env.take(),
            upstream_model: self.upstream_model.take(),
            responses_api: self.responses_api.take(),
        };
        match self.deployments.take() {
            None => {
                let provider = single.build()?;
                Ok(vec![Deployment::single(provider, self.timeout_secs)])
            }
            Some(list) => {
                if single.any_given() {
                    return Err("give either `deployments` or the provider fields (`provider`, `base_url`, …), not both".into());
                }
                super::deployment::from_list(list)
            }
        }
    }

    fn pass_through(&mut self) -> BTreeSet<String> {
        let fields = self.pass_through.take().unwrap_or_default();
        fields.into_iter().map(|f| f.0).collect()
    }
}

impl TryFrom<RawModelFields> for RawModel {
    type Error = String;
    fn try_from(mut f: RawModelFields) -> Result<Self, String> {
        let deployments = f.deployments()?;
        if f.max_output_tokens == Some(0) {
            return Err("max_output_tokens must be at least 1".into());
        }
        if f.timeout_secs == Some(0) {
            return Err("timeout_secs must be at least 1".into());
        }
        let pass_through = f.pass_through();
        let media = f.media.unwrap_or_default();
        Ok(RawModel {
            deployments,
            fallbacks: f.fallbacks.take().unwrap_or_default(),
            price: Price {
                input_micro: f.price.input.0,
                output_micro: f.price.output.0,
                request_micro: f.price.request.map_or(0, |c| c.0),
                cached_input_micro: f.price.cached_input.map_or(f.price.input.0, |c| c.0),
                cache_write_micro: f.price.cache_write.map_or(f.price.input.0, |c| c.0),
            },
            max_output_tokens: f.max_output_tokens,
            consent_notice: f.consent_notice,
            timeout_secs: f.timeout_secs,
            media: MediaCosts {
                image: media.image,
                audio: media.audio,
                file: media.file,
            },
            pass_through,
        })
    }
}

fn entry_settings(raw: Option<RawEntry>) -> OwnerSettings {
    let Some(raw) = raw else {
        return OwnerSettings::empty();
    };
    let limit = raw.max.map_or(PoolLimit::Limited(0), |m| m.0);
    let access = match raw.model_access {
        None => AccessPolicy::deny_all(),
        Some(a) => AccessPolicy {
            default: a.default.unwrap_or(AccessMode::Blacklist),
            whitelist: a.whitelist.unwrap_or_default().into_iter().collect(),
            blacklist: a.blacklist.unwrap_or_default().into_iter().collect(),
            graylist: a.graylist.unwrap_or_default().into_iter().collect(),
        },
    };
    OwnerSettings {
        pool: PoolSettings {
            limit,
            refresh_micro: raw.refresh.map_or(0, |c| c.0),
            starting_micro: raw.starting.map_or(0, |c| c.0),
        },
        access,
        rate_limits: raw.rate_limits.map_or(RateLimits::NONE, |r| RateLimits {
            requests_per_minute: r.requests_per_minute.map(|n| n.0),
            tokens_per_minute: r.tokens_per_minute.map(|n| n.0),
        }),
    }
}

fn section(raw: Option<BTreeMap<EntryName, Option<RawEntry>>>) -> Section {
    let mut s = Section::default();
    for (name, entry) in raw.unwrap_or_default() {
        let settings = entry_settings(entry);
        if name.0 == "default" {
            s.default = settings;
        } else {
            s.named.insert(name.0, settings);
        }
    }
    s
}

fn section_warnings(
    kind: &str,
    section: &Section,
    models: &BTreeMap<String, ModelSpec>,
    out: &mut Vec<Warning>,
) {
    let entries = std::iter::once(("default", &section.default))
        .chain(section.named.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, settings) in entries {
        let path = format!("{kind}.{name}.model_access");
        let a = &settings.access;
        let lists: [(&str, &BTreeSet<String>); 3] = [
            ("whitelist", &a.whitelist),
            ("blacklist", &a.blacklist),
            ("graylist", &a.graylist),
        ];
        for (i, (la, a_list)) in lists.iter().enumerate() {
            for (lb, b_list) in lists.iter().skip(i + 1) {
                for m in a_list.intersection(b_list) {
                    out.push(Warning {
                        path: path.clone(),
                        message: format!(
                            "model `{m}` is in both {la} and {lb}; blacklist wins over whitelist, whitelist over graylist"
                        ),
                        line: None,
                    });
                }
            }
            for m in a_list.iter() {
                if !models.contains_key(m) {
                    out.push(Warning {
                        path: format!("{path}.{la}"),
                        message: format!("model `{m}` is not in the `models` catalog"),
                        line: None,
                    });
                }
            }
        }
    }
}

/// Named entries inherit nothing, so an entry without `rate_limits` is
/// unlimited even when `default` is limited: probably an oversight.
fn rate_limit_warnings(kind: &str, section: &Section, out: &mut Vec<Warning>) {
    if section.default.rate_limits.is_none() {
        return;
    }
    let one = if kind == "clients" { "client" } else { "user" };
    for (name, settings) in &section.named {
        if settings.rate_limits.is_none() {
            out.push(Warning {
                path: format!("{kind}.{name}.rate_limits"),
                message: format!(
                    "`{kind}.default` has rate_limits but this entry has none, so {one} `{name}` is not rate limited (a named entry inherits nothing from `default`); add rate_limits here to limit it"
                ),
                line: None,
            });
        }
    }
}

/// Fallbacks that go nowhere, and fields forwarded unbounded.
fn model_warnings(models: &BTreeMap<String, ModelSpec>, out: &mut Vec<Warning>) {
    for (name, m) in models {
        for f in &m.fallbacks {
            if f == name || !models.contains_key(f) {
                out.push(Warning {
                    path: format!("models.{name}.fallbacks"),
                    message: format!(
                        "fallback `{f}` is {}; it is skipped",
                        if f == name {
                            "the model itself"
                        } else {
                            "not in the catalog"
                        }
                    ),
                    line: None,
                });
            }
        }
        for field in &m.pass_through {
            out.push(Warning {
                path: format!("models.{name}.pass_through"),
                message: format!(
                    "`{field}` is forwarded as callers send it; the gateway cannot bound what it costs, so a call may cost more than it reserved (the excess is recorded as overage)"
                ),
                line: None,
            });
        }
    }
}

impl RawConfig {
    /// Turns the parsed file into the effective configuration plus warnings.
    /// Value errors were already raised while reading, with their positions.
    pub fn into_config(self) -> (Config, Vec<Warning>) {
        let models: BTreeMap<String, ModelSpec> = self
            .models
            .unwrap_or_default()
            .into_iter()
            .map(|(name, m)| {
                (
                    name.0.clone(),
                    ModelSpec {
                        name: name.0,
                        deployments: m.deployments,
                        fallbacks: m.fallbacks,
                        price: m.price,
                        max_output_tokens: m.max_output_tokens,
                        consent_notice: m.consent_notice,
                        timeout_secs: m.timeout_secs,
                        media: m.media,
                        pass_through: m.pass_through,
                    },
                )
            })
            .collect();
        let config = Config {
            server: self.server.unwrap_or_default(),
            clients: section(self.clients),
            users: section(self.users),
            models,
            alerts: self.alerts.map(RawAlerts::into_settings),
            auth: self.auth.unwrap_or_default(),
        };
        let mut warnings = Vec::new();
        section_warnings("clients", &config.clients, &config.models, &mut warnings);
        section_warnings("users", &config.users, &config.models, &mut warnings);
        rate_limit_warnings("clients", &config.clients, &mut warnings);
        rate_limit_warnings("users", &config.users, &mut warnings);
        model_warnings(&config.models, &mut warnings);
        (config, warnings)
    }
}

impl ModelSpec {
    /// The provider of the model's deployments (they all share one kind).
    pub fn provider(&self) -> &Provider {
        // A parsed model always has at least one deployment.
        const NONE: &Provider = &Provider::Dummy;
        self.deployments.first().map_or(NONE, |d| &d.provider)
    }
}

// ---------------------------------------------------------------------------
// `alerts:`: budget alert webhooks (the rules are in `domain::alerts`).
// ---------------------------------------------------------------------------

/// `alerts:`: where budget alerts are sent, and at which percentages of
/// `max` used. No section, no alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSettings {
    pub webhooks: Vec<WebhookTarget>,
    /// Whole percentages from 1 to 100, ascending.
    pub thresholds: Vec<u8>,
}

impl AlertSettings {
    /// The target with this URL (URLs are unique).
    pub fn target(&self, url: &str) -> Option<&WebhookTarget> {
        self.webhooks.iter().find(|w| w.url == url)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    /// The name of the environment variable the secret was read from.
    pub secret_env: String,
    /// The HMAC key, read from `secret_env` when the file was loaded.
    /// Never serialized, and its `Debug` does not show it.
    #[serde(skip)]
    pub secret: WebhookSecret,
}

/// A webhook's signing secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub webhooks: RawWebhooks,
    #[serde(default)]
    pub thresholds: Option<RawThresholds>,
}

impl RawAlerts {
    pub fn into_settings(self) -> AlertSettings {
        AlertSettings {
            webhooks: self.webhooks.0,
            thresholds: self
                .thresholds
                .map_or_else(|| super::alerts::DEFAULT_THRESHOLDS.to_vec(), |t| t.0),
        }
    }
}

/// `alerts.webhooks`: 1 to [`super::alerts::MAX_WEBHOOKS`] targets, each URL once.
#[derive(Debug)]
pub struct RawWebhooks(Vec<WebhookTarget>);

impl<'de> Deserialize<'de> for RawWebhooks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<RawWebhook>::deserialize(d)?;
        let max = super::alerts::MAX_WEBHOOKS;
        if list.is_empty() || list.len() > max {
            return Err(de::Error::custom(format!(
                "give 1 to {max} webhooks, got {}",
                list.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for w in &list {
            if !seen.insert(w.url.0.as_str()) {
                return Err(de::Error::custom(format!(
                    "webhook `{}` is listed twice",
                    w.url.0
                )));
            }
        }
        Ok(RawWebhooks(
            list.into_iter()
                .map(|w| WebhookTarget {
                    url: w.url.0,
                    secret_env: w.secret_env.name,
                    secret: w.secret_env.secret,
                })
                .collect(),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: WebhookUrl,
    pub secret_env: SecretEnv,
}

/// A webhook's `url`: http(s), at most 2048 characters, no spaces.
#[derive(Debug)]
pub struct WebhookUrl(String);

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_visitor(d, "an http:// or https:// URL", |url| {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
            if host.is_none_or(str::is_empty) {
                return Err(format!(
                    "url `{url}` must start with http:// or https:// and name a host"
                ));
            }
            if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("url must be at most 2048 characters, without spaces".into());
            }
            Ok(WebhookUrl(url.to_string()))
        })
    }
}

/// Reads a string and checks it inside the visitor, so that an error
/// carries the position of the value itself.
fn text_visitor<'de, D, T>(
    d: D,
    what: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        check: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { what, check })
}

/// A webhook's `secret_env`: the name of an environment variable, read
/// when the file is loaded. A variable that is missing or empty is an
/// error here, with the file position, rather than unsigned alerts later.
#[derive(Debug)]
pub struct SecretEnv {
    name: String,
    secret: WebhookSecret,
}

impl<'de> Deserialize<'de> for SecretEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text_visitor(d, "the name of an environment variable", |name| {
            let valid = !name.is_empty()
                && name.len() <= 128
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`{name}` is not an environment variable name (letters, digits and `_`)"
                ));
            }
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(SecretEnv {
                    name: name.to_string(),
                    secret: WebhookSecret(v),
                }),
                Ok(_) => Err(format!(
                    "environment variable `{name}` is empty; it must hold the webhook's signing secret"
                )),
                Err(_) => Err(format!(
                    "environment variable `{name}` is not set; it must hold the webhook's signing secret"
                )),
            }
        })
    }
}

/// `alerts.thresholds`: whole percentages from 1 to 100, ascending, each once.
#[derive(Debug)]
pub struct RawThresholds(Vec<u8>);

/// One threshold: a whole number from 1 to 100.
#[derive(Debug, Clone, Copy)]
pub struct Percent(u8);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_visitor(d, "a whole percentage from 1 to 100", |v| {
            if v.fract() != 0.0 || !(1.0..=100.0).contains(&v) {
                return Err(format!(
                    "a threshold is a whole percentage from 1 to 100, got {v}"
                ));
            }
            Ok(Percent(v as u8))
        })
    }
}

impl<'de> Deserialize<'de> for RawThresholds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<u8> = Vec::<Percent>::deserialize(d)?
            .into_iter()
            .map(|p| p.0)
            .collect();
        super::alerts::check_thresholds(&list).map_err(<D::Error as de::Error>::custom)?;
        Ok(RawThresholds(list))
    }
}
