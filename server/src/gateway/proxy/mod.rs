//! One metered model call, in named stages: resolve the model and access,
//! bound and reserve the worst case, dispatch to the provider, meter and
//! settle the actual cost.

mod chain;
mod dispatch;
mod stream;

use super::accountant::{Admission, CallInfo, Outcome, Ticket};
use super::error::{invalid_json, ApiError};
use super::protocol::{messages, responses, upstream_wire, Transcode};
use super::providers::{anthropic, Kind, ProviderError, Reply, Usage};
use super::{consent_url, pool_of, Caller, Gateway, JsonBody, RequestId};
use app::domain::bound::{bound, json_len, Bound, ModelLimits};
use app::domain::config::{Config, ModelSpec, OwnerSettings, Provider, SettingsSource};
use app::domain::money::format_coins;
use app::domain::outcome::CallOutcome;
use app::domain::policy::{Rule, Verdict};
use app::ssr::balancer::Attempt;
use app::ssr::entities::pool;
use app::ssr::keys::KeyOwner;
use app::ssr::owners::OwnerKind;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chain::Chain;
use serde_json::Value;
use std::time::{Duration, Instant};
use stream::{Meter, Relay};

/// Total time allowed for an upstream call, streaming included, unless the
/// model sets `timeout_secs`.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);

pub fn settings_for<'a>(
    config: &'a Config,
    owner: &KeyOwner,
) -> (&'a OwnerSettings, SettingsSource) {
    match owner.kind {
        OwnerKind::Client => config.clients.settings_for(&owner.name),
        OwnerKind::User => config.users.settings_for(&owner.name),
    }
}

pub(super) fn db_down(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("accounting failed: {e}");
    ApiError::AccountingUnavailable(
        "the gateway cannot record this call's cost right now, so it was not sent upstream; retry shortly".into(),
    )
}

/// The typed view of a metered request that every protocol shares: which
/// endpoint, which model, whether it streams, and the body to forward.
pub struct CallRequest {
    pub kind: Kind,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub body: Value,
}

impl CallRequest {
    pub fn parse(kind: Kind, body: JsonBody) -> Result<CallRequest, ApiError> {
        let Json(body) = body.map_err(invalid_json)?;
        if !body.is_object() {
            return Err(ApiError::InvalidRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        let model = body["model"]
            .as_str()
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "`model` is required: the name of a model in GET /v1/models".into(),
                )
            })?
            .to_string();
        Ok(CallRequest {
            kind,
            model,
            stream: kind != Kind::Embeddings && body["stream"].as_bool() == Some(true),
            include_usage: body["stream_options"]["include_usage"].as_bool() == Some(true),
            body,
        })
    }
}

/// Where an admitted call goes and whom it is charged to.
struct Route {
    spec: ModelSpec,
    pool: pool::Model,
    call: CallInfo,
    /// The protocol the call goes upstream in.
    wire: Kind,
}

/// One metered call, stage by stage: authenticate (the `Caller` extractor)
/// → resolve model and access → bound and reserve → dispatch → meter and
/// settle. Every stage after `resolve` that refuses leaves a ledger row.
pub async fn call(
    gw: Gateway,
    id: RequestId,
    Caller(owner): Caller,
    body: JsonBody,
    kind: Kind,
) -> Result<Response, ApiError> {
    let mut req = CallRequest::parse(kind, body)?;
    let started = Instant::now();
    let mut route = resolve(&gw, &owner, &req, id.clone()).await?;
    let chain = match kind {
        Kind::Responses => Some(
            chain::expand(&gw, &owner, &req.model, &mut req.body)
                .await
                .map_err(|e| refused(&gw, &route, e))?,
        ),
        _ => None,
    };
    // A fallback starts again from the caller's request, in its own protocol.
    let mut fallbacks = route.spec.fallbacks.clone().into_iter();
    let original = (fallbacks.len() > 0).then(|| req.body.clone());
    let mut upstream = Duration::ZERO;
    loop {
        let (mut ticket, worst) = reserve(&gw, &owner, &route, &mut req).await?;
        let deadline = started + upstream_timeout(&route.spec);
        let sent = Instant::now();
        let (reply, attempt) =
            dispatch::dispatch(&gw, &route, &mut req, worst.per_choice, deadline).await;
        upstream += sent.elapsed();
        if let Some(a) = &attempt {
            ticket.served_by(&a.deployment);
        }
        if let (Err(e), Some(body)) = (&reply, &original) {
            if e.failure().is_some() || matches!(e, ProviderError::Unavailable(_)) {
                if let Some(next) = next_fallback(&gw, &owner, &mut fallbacks, &mut req, &id).await
                {
                    tracing::warn!(from = %route.spec.name, to = %next.spec.name, "every deployment failed; falling back: {e}");
                    ticket.settle(Outcome::priced(
                        &route.spec.price,
                        Usage::default(),
                        CallOutcome::UpstreamError,
                    ));
                    req.body = body.clone();
                    route = next;
                    continue;
                }
            }
        }
        let mut resp = settle(&gw, reply, ticket, &route, &req, worst, chain, attempt).await;
        resp.extensions_mut()
            .insert(crate::metrics::UpstreamTime(upstream));
        return Ok(resp);
    }
}

/// The next fallback the caller may use (access and consent as for any
/// call; one it may not use is skipped without a trace in its ledger).
async fn next_fallback(
    gw: &Gateway,
    owner: &KeyOwner,
    fallbacks: &mut std::vec::IntoIter<String>,
    req: &mut CallRequest,
    id: &RequestId,
) -> Option<Route> {
    for name in fallbacks.by_ref() {
        let snapshot = gw.ctx.config.load_full();
        let Some(spec) = snapshot.config.models.get(&name) else {
            continue;
        };
        let wire = upstream_wire(req.kind, spec.provider())?;
        let (settings, _) = settings_for(&snapshot.config, owner);
        let mut decision = settings.access.decide(&name, false);
        if decision.verdict == Verdict::ConsentRequired {
            let consented = gw
                .directory
                .consents(owner.kind, owner.owner_id)
                .await
                .ok()?;
            decision = settings.access.decide(&name, consented.contains(&name));
        }
        if decision.verdict != Verdict::Allowed {
            continue;
        }
        req.model = name.clone();
        return Some(Route {
            spec: spec.clone(),
            pool: pool_of(owner).ok()?.clone(),
            call: CallInfo {
                request_id: id.0.clone(),
                key_id: Some(owner.key_id),
                model: name,
                deployment: String::new(),
            },
            wire,
        });
    }
    None
}

fn upstream_timeout(spec: &ModelSpec) -> Duration {
    spec.timeout_secs
        .map_or(UPSTREAM_TIMEOUT, |s| Duration::from_secs(s.into()))
}

/// A provider's failure as the caller sees it, and as the ledger records it.
fn provider_error(e: ProviderError) -> (ApiError, CallOutcome) {
    match e {
        ProviderError::Timeout(m) => (ApiError::UpstreamTimeout(m), CallOutcome::UpstreamTimeout),
        ProviderError::Failed(m) | ProviderError::Status { message: m, .. } => {
            (ApiError::Upstream(m), CallOutcome::UpstreamError)
        }
        ProviderError::Unavailable(m) => {
            (ApiError::UpstreamUnavailable(m), CallOutcome::UpstreamError)
        }
        ProviderError::Unsupported(m) => (ApiError::InvalidRequest(m), CallOutcome::Refused),
    }
}

/// A refusal after the model is known: it leaves a ledger row.
fn refused(gw: &Gateway, route: &Route, e: ApiError) -> ApiError {
    gw.accountant.refuse(route.pool.id, &route.call, e.code());
    e
}

/// Resolves the model and checks the caller's access to it (consent from
/// memory, see `directory`).
async fn resolve(
    gw: &Gateway,
    owner: &KeyOwner,
    req: &CallRequest,
    id: RequestId,
) -> Result<Route, ApiError> {
    let snapshot = gw.ctx.config.load_full();
    let model_name = &req.model;
    let spec = snapshot.config.models.get(model_name).cloned().ok_or_else(|| {
        ApiError::ModelNotFound(format!(
            "model `{model_name}` is not in this gateway's catalog; GET /v1/models lists the models this key may call"
        ))
    })?;
    let wire = upstream_wire(req.kind, spec.provider());
    let route = Route {
        wire: wire.unwrap_or(req.kind),
        spec,
        pool: pool_of(owner)?.clone(),
        call: CallInfo {
            request_id: id.0,
            key_id: Some(owner.key_id),
            model: model_name.clone(),
            deployment: String::new(),
        },
    };
    let (settings, _) = settings_for(&snapshot.config, owner);
    let mut decision = settings.access.decide(model_name, false);
    if decision.verdict == Verdict::ConsentRequired
        && gw
            .directory
            .consents(owner.kind, owner.owner_id)
            .await
            .map_err(db_down)?
            .contains(model_name)
    {
        decision = settings.access.decide(model_name, true);
    }
    let refused = match decision.verdict {
        Verdict::Allowed if wire.is_some() => return Ok(route),
        Verdict::Allowed => ApiError::InvalidRequest(format!(
            "`{model_name}` is served by an Anthropic upstream, which has no {} endpoint; call it through /v1/chat/completions, /v1/responses or /v1/messages",
            req.kind.path()
        )),
        Verdict::Denied => ApiError::ModelNotAllowed(format!(
            "{} `{}` may not call `{model_name}`: {} ({}). An admin can change model_access in the config.",
            owner.kind.as_str(),
            owner.name,
            match decision.rule {
                Rule::Blacklist => "it is on the blacklist",
                _ => "it is not listed and unlisted models are denied",
            },
            decision.rule
        )),
        Verdict::ConsentRequired => ApiError::ConsentRequired(format!(
            "`{model_name}` needs recorded consent before {} `{}` may call it ({}). Record it at {}",
            owner.kind.as_str(),
            owner.name,
            decision.rule,
            consent_url(gw, owner)
        )),
    };
    gw.accountant
        .refuse(route.pool.id, &route.call, refused.code());
    Err(refused)
}

/// Bounds the request (rewriting its length fields) and reserves its worst
/// case against this instance's lease on the caller's pool.
async fn reserve(
    gw: &Gateway,
    owner: &KeyOwner,
    route: &Route,
    req: &mut CallRequest,
) -> Result<(Ticket, Bound), ApiError> {
    let limits = ModelLimits {
        max_output_tokens: route.spec.max_output_tokens,
        media: &route.spec.media,
        pass_through: &route.spec.pass_through,
    };
    let refuse = |e: ApiError| {
        gw.accountant.refuse(route.pool.id, &route.call, e.code());
        e
    };
    let mut worst = bound(req.kind, &mut req.body, limits)
        .map_err(|r| refuse(ApiError::InvalidRequest(r.to_string())))?;
    translate(route.wire, req, &mut worst);
    let rate = gw
        .limiter
        .admit(owner, worst.input.saturating_add(worst.output))
        .await
        .map_err(refuse)?;
    let estimate = route.spec.price.worst(worst.input, worst.output);
    let admission = gw
        .accountant
        .admit(&route.pool, estimate, &route.call)
        .await
        .map_err(db_down)?;
    let who = format!("{} `{}`", owner.kind.as_str(), owner.name);
    match admission {
        Admission::Admitted(t) => Ok((t.with_rate(rate), worst)),
        Admission::Blocked => Err(refuse(ApiError::PoolBlocked(format!(
            "the coin pool of {who} is blocked (max: 0); an admin can raise its max in the config"
        )))),
        Admission::Insufficient { balance } => Err(refuse(ApiError::InsufficientCoins(format!(
            "this call may cost up to {} coins but {who} has {} left; lower max_tokens, shorten the prompt, or wait for the pool to refill (GET /v1/balance)",
            format_coins(estimate),
            format_coins(balance)
        )))),
    }
}

/// Rewrites the bounded request into the protocol it goes upstream in. What
/// the translation adds is counted as input too, so the bound still covers
/// every byte sent.
fn translate(wire: Kind, req: &mut CallRequest, worst: &mut Bound) {
    let upstream = match (req.kind, wire) {
        (Kind::Responses, Kind::Chat) => responses::to_chat(&req.body),
        (Kind::Messages, Kind::Chat) => messages::to_chat(&req.body),
        (Kind::Responses, Kind::Responses) => {
            // The gateway keeps stored responses itself, for their owner.
            req.body["store"] = Value::Bool(false);
            return;
        }
        _ => return,
    };
    let grown = json_len(&upstream).saturating_sub(json_len(&req.body));
    worst.input = worst.input.saturating_add(grown);
    req.body = upstream;
}

/// Charges what the reply cost: at once for a JSON reply, or as the stream
/// ends (however it ends) through the `Meter`. The reply reaches the caller
/// in the caller's protocol.
#[allow(clippy::too_many_arguments)]
async fn settle(
    gw: &Gateway,
    reply: Result<Reply, ProviderError>,
    ticket: Ticket,
    route: &Route,
    req: &CallRequest,
    worst: Bound,
    chain: Option<Chain>,
    attempt: Option<Attempt>,
) -> Response {
    let deployment = attempt.as_ref().map(|a| a.deployment.clone());
    let mut resp = settled(gw, reply, ticket, route, req, worst, chain, attempt).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&req.model) {
        h.insert("x-tollgate-model", v);
    }
    if let Some(v) = deployment.and_then(|d| HeaderValue::from_str(&d).ok()) {
        h.insert("x-tollgate-deployment", v);
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn settled(
    gw: &Gateway,
    reply: Result<Reply, ProviderError>,
    ticket: Ticket,
    route: &Route,
    req: &CallRequest,
    worst: Bound,
    chain: Option<Chain>,
    attempt: Option<Attempt>,
) -> Response {
    let price = route.spec.price;
    let typical_input = worst.input.div_ceil(4);
    match reply {
        Err(e) => {
            // Nothing was served: release the whole reservation.
            let (err, result) = provider_error(e);
            ticket.settle(Outcome::priced(&price, Usage::default(), result));
            super::error::render(req.kind, err)
        }
        Ok(Reply::Json { body, usage }) => {
            // Some local servers omit usage; never charge 0 for what they produced.
            let reported = body.get("usage").is_some_and(Value::is_object);
            let (usage, result) = if reported || req.kind == Kind::Embeddings {
                (usage, CallOutcome::Ok)
            } else {
                (
                    Usage {
                        input: typical_input,
                        output: (text_bytes(&body) as u64).div_ceil(4),
                        ..Usage::default()
                    },
                    CallOutcome::OkWithoutUsage,
                )
            };
            ticket.settle(Outcome::priced(&price, usage, result));
            let reply = in_callers_protocol(route, req, body, &usage, chain.as_ref());
            if let Some(chain) = &chain {
                chain.save(gw, &reply).await;
            }
            Json(reply).into_response()
        }
        Ok(Reply::Stream(chunks)) => {
            let transcode: Option<Box<dyn Transcode>> = match (req.kind, route.wire, &chain) {
                (Kind::Responses, Kind::Chat, Some(c)) => Some(Box::new(
                    responses::FromChatStream::new(&c.echo, &c.id, &req.model),
                )),
                (Kind::Messages, Kind::Chat, _) => {
                    Some(Box::new(messages::FromChatStream::new(&req.model)))
                }
                _ => None,
            };
            let relay = Relay {
                attempt,
                kind: req.kind,
                transcode,
                chain,
                model: req.model.clone(),
                gw: gw.clone(),
            };
            stream::respond(chunks, Meter::new(ticket, price, typical_input), relay)
        }
    }
}

/// A JSON reply from the upstream, in the caller's protocol.
fn in_callers_protocol(
    route: &Route,
    req: &CallRequest,
    mut body: Value,
    usage: &Usage,
    chain: Option<&Chain>,
) -> Value {
    match (req.kind, route.wire, chain) {
        (Kind::Responses, Kind::Chat, Some(c)) => {
            responses::from_chat(&body, &c.echo, &c.id, &req.model, usage)
        }
        (Kind::Responses, _, Some(c)) => {
            c.adopt(&mut body, &req.model);
            body
        }
        (Kind::Messages, Kind::Chat, _) => messages::from_chat(&body, &req.model, usage),
        (Kind::Messages, _, _) => {
            body["model"] = Value::String(req.model.clone());
            body
        }
        _ => body,
    }
}

/// Bytes of the text a reply carries, wherever its protocol puts it: to
/// estimate the output of a reply that reported no usage.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("text" | "content" | "arguments" | "thinking", Value::String(s)) => s.len(),
                (_, v) => text_bytes(v),
            })
            .sum(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        _ => 0,
    }
}

/// `POST /v1/messages/count_tokens`: free, but only for a model the caller
/// may use, and only for a request the gateway would forward. The count is
/// the typical estimate (a quarter of the bytes) unless the upstream is
/// Anthropic's, which counts exactly.
pub async fn count_tokens(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    axum::Extension(id): axum::Extension<RequestId>,
    caller: Result<Caller, ApiError>,
    body: JsonBody,
) -> Response {
    let model = super::catalog_model(&gw, &body);
    let resp = count(gw, id, caller, body)
        .await
        .unwrap_or_else(|e| super::error::render(Kind::Messages, e));
    super::with_model(resp, model)
}

async fn count(
    gw: Gateway,
    id: RequestId,
    caller: Result<Caller, ApiError>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let Caller(owner) = caller?;
    let mut req = CallRequest::parse(Kind::Messages, body)?;
    let route = resolve(&gw, &owner, &req, id).await?;
    let limits = ModelLimits {
        max_output_tokens: route.spec.max_output_tokens,
        media: &route.spec.media,
        pass_through: &route.spec.pass_through,
    };
    let worst = bound(Kind::Messages, &mut req.body, limits)
        .map_err(|r| ApiError::InvalidRequest(r.to_string()))?;
    if let Provider::Anthropic {
        base_url,
        api_key_env,
        upstream_model,
    } = route.spec.provider()
    {
        let target = anthropic::Target {
            base_url,
            api_key_env: api_key_env.as_deref(),
            upstream_model,
            timeout: Duration::from_secs(30),
        };
        if let Some(map) = req.body.as_object_mut() {
            map.retain(|k, _| {
                [
                    "model",
                    "messages",
                    "system",
                    "tools",
                    "tool_choice",
                    "thinking",
                ]
                .contains(&k.as_str())
            });
        }
        let sent = Instant::now();
        let counted = anthropic::count_tokens(&gw.http, &target, req.body).await;
        let waited = crate::metrics::UpstreamTime(sent.elapsed());
        let mut resp = match counted {
            Ok(v) => Json(v).into_response(),
            Err(e) => super::error::render(Kind::Messages, provider_error(e).0),
        };
        resp.extensions_mut().insert(waited);
        return Ok(resp);
    }
    Ok(Json(serde_json::json!({"input_tokens": worst.input.div_ceil(4)})).into_response())
}
