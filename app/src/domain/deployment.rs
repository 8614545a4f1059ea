//! Where a model's calls go: its deployments (one upstream each) and the
//! provider fields that describe one upstream, as the config file gives them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    Dummy,
    OpenAi {
        base_url: String,
        api_key_env: Option<String>,
        upstream_model: String,
        /// Whether the upstream serves the Responses API itself
        /// (`responses_api: native`); otherwise Responses calls are
        /// translated onto chat completions.
        native_responses: bool,
    },
    /// Anthropic's Messages API (`base_url` as Anthropic's SDKs take it,
    /// without `/v1`).
    Anthropic {
        base_url: String,
        api_key_env: Option<String>,
        upstream_model: String,
    },
}

impl Provider {
    /// The provider's kind and protocol settings, which every deployment of
    /// one model must share (the protocol a call goes upstream in depends on them).
    fn protocol(&self) -> (&'static str, bool) {
        match self {
            Provider::Dummy => ("dummy", false),
            Provider::OpenAi {
                native_responses, ..
            } => ("openai", *native_responses),
            Provider::Anthropic { .. } => ("anthropic", false),
        }
    }
}

/// Where Anthropic's API lives unless a model says otherwise.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The most deployments one model may list.
pub const MAX_DEPLOYMENTS: usize = 32;

/// One upstream of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its name, unique within the model: what `x-tollgate-deployment` and
    /// the ledger show. `default` for a model with a single upstream.
    pub name: String,
    pub provider: Provider,
    /// Time allowed for one attempt on this deployment.
    pub timeout_secs: Option<u32>,
    /// Share of the traffic, relative to the model's other deployments.
    pub weight: u32,
    /// Calls it may have in flight at once; more go elsewhere or wait their turn.
    pub max_in_flight: Option<u32>,
}

impl Deployment {
    /// The one deployment of a model given in the single-upstream form.
    pub fn single(provider: Provider, timeout_secs: Option<u32>) -> Deployment {
        Deployment {
            name: "default".into(),
            provider,
            timeout_secs,
            weight: 1,
            max_in_flight: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Dummy,
}

/// `responses_api:` on an `openai` model: whether `/v1/responses` calls go
/// upstream as they are, or are translated onto chat completions.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesApi {
    Native,
    #[default]
    Chat,
}

/// One entry under a model's `deployments:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub name: Option<String>,
    pub provider: ProviderKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub upstream_model: Option<String>,
    pub responses_api: Option<ResponsesApi>,
    pub timeout_secs: Option<u32>,
    pub weight: Option<u32>,
    pub max_in_flight: Option<u32>,
}

/// The fields that describe one upstream.
pub struct ProviderFields {
    pub provider: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub upstream_model: Option<String>,
    pub responses_api: Option<ResponsesApi>,
}

impl ProviderFields {
    pub fn any_given(&self) -> bool {
        self.provider.is_some()
            || self.base_url.is_some()
            || self.api_key_env.is_some()
            || self.upstream_model.is_some()
            || self.responses_api.is_some()
    }

    /// The provider, with only the fields that provider takes.
    pub fn build(mut self) -> Result<Provider, String> {
        let kind = self.provider.ok_or(
            "`provider` is required (or a `deployments` list): dummy, openai or anthropic",
        )?;
        if self.responses_api.is_some() && !matches!(kind, ProviderKind::Openai) {
            return Err("`responses_api` applies only to provider `openai`".into());
        }
        match kind {
            ProviderKind::Dummy => {
                for (name, v) in [
                    ("base_url", &self.base_url),
                    ("api_key_env", &self.api_key_env),
                    ("upstream_model", &self.upstream_model),
                ] {
                    if v.is_some() {
                        return Err(format!(
                            "`{name}` applies only to providers `openai` and `anthropic`"
                        ));
                    }
                }
                Ok(Provider::Dummy)
            }
            ProviderKind::Openai => Ok(Provider::OpenAi {
                base_url: self.base_url("openai", None)?,
                upstream_model: self.upstream_model("openai")?,
                api_key_env: self.api_key_env.take(),
                native_responses: self.responses_api == Some(ResponsesApi::Native),
            }),
            ProviderKind::Anthropic => Ok(Provider::Anthropic {
                base_url: self.base_url("anthropic", Some(ANTHROPIC_BASE_URL))?,
                upstream_model: self.upstream_model("anthropic")?,
                api_key_env: self.api_key_env.take(),
            }),
        }
    }

    fn base_url(&mut self, provider: &str, default: Option<&str>) -> Result<String, String> {
        let base_url = match (self.base_url.take(), default) {
            (Some(u), _) => u,
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(format!(
                    "provider `{provider}` needs `base_url`, e.g. https://api.openai.com/v1"
                ))
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!(
                "base_url `{base_url}` must start with http:// or https://"
            ));
        }
        Ok(base_url.trim_end_matches('/').to_string())
    }

    fn upstream_model(&mut self, provider: &str) -> Result<String, String> {
        self.upstream_model.take().ok_or_else(|| {
            format!("provider `{provider}` needs `upstream_model`, the model name upstream")
        })
    }
}

fn one(i: usize, d: RawDeployment) -> Result<Deployment, String> {
    let at = |e: String| format!("deployments[{i}]: {e}");
    let name = d.name.unwrap_or_else(|| i.to_string());
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(at(format!(
            "name `{name}` must be 1 to 64 of A-Z a-z 0-9 - _ ."
        )));
    }
    for (field, v) in [
        ("weight", d.weight),
        ("max_in_flight", d.max_in_flight),
        ("timeout_secs", d.timeout_secs),
    ] {
        if v == Some(0) {
            return Err(at(format!("`{field}` must be at least 1")));
        }
    }
    let provider = ProviderFields {
        provider: Some(d.provider),
        base_url: d.base_url,
        api_key_env: d.api_key_env,
        upstream_model: d.upstream_model,
        responses_api: d.responses_api,
    }
    .build()
    .map_err(at)?;
    Ok(Deployment {
        name,
        provider,
        timeout_secs: d.timeout_secs,
        weight: d.weight.unwrap_or(1),
        max_in_flight: d.max_in_flight,
    })
}

/// A model's `deployments:` list, checked: 1 to 32 entries, unique names,
/// one provider kind (and one `responses_api`) for all.
pub fn from_list(list: Vec<RawDeployment>) -> Result<Vec<Deployment>, String> {
    if list.is_empty() || list.len() > MAX_DEPLOYMENTS {
        return Err(format!(
            "`deployments` must list 1 to {MAX_DEPLOYMENTS} upstreams"
        ));
    }
    let out = list
        .into_iter()
        .enumerate()
        .map(|(i, d)| one(i, d))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, d) in out.iter().enumerate() {
        if out[..i].iter().any(|e| e.name == d.name) {
            return Err(format!(
                "deployments[{i}]: the name `{}` is used twice",
                d.name
            ));
        }
        if d.provider.protocol() != out[0].provider.protocol() {
            return Err(format!(
                "deployments[{i}]: every deployment of a model must have the same provider (and `responses_api`), because the protocol a call is sent in depends on it"
            ));
        }
    }
    Ok(out)
}
