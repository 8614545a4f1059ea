//! One metered model call, in named stages: resolve the model and access,
//! bound and reserve the worst case, dispatch to the provider, meter and
//! settle the actual cost.

use super::accountant::{Admission, CallInfo, Outcome, Ticket};
use super::error::{invalid_json, ApiError};
use super::providers::{anthropic, dummy, openai, Chunk, ChunkStream, Kind, ProviderError, Reply, Usage};
use super::{consent_url, pool_of, Caller, Gateway, JsonBody, RequestId};
use app::domain::bound::{bound, Bound, ModelLimits};
use app::domain::config::{Config, ModelSpec, OwnerSettings, Provider, SettingsSource};
use app::domain::money::format_coins;
use app::domain::outcome::CallOutcome;
use app::domain::policy::{Rule, Verdict};
use app::domain::pricing::Price;
use app::ssr::entities::pool;
use app::ssr::keys::KeyOwner;
use app::ssr::owners::OwnerKind;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

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

fn db_down(e: impl std::fmt::Display) -> ApiError {
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
    let route = resolve(&gw, &owner, &req, id).await?;
    let (ticket, worst) = reserve(&gw, &owner, &route, &mut req).await?;
    let reply = dispatch(&gw, &route, &mut req, worst.per_choice).await;
    Ok(settle(reply, ticket, &route, &req, worst))
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
    let route = Route {
        spec,
        pool: pool_of(owner)?.clone(),
        call: CallInfo {
            request_id: id.0,
            key_id: Some(owner.key_id),
            model: model_name.clone(),
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
        Verdict::Allowed => return Ok(route),
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
    let worst = bound(req.kind, &mut req.body, limits)
        .map_err(|r| refuse(ApiError::InvalidRequest(r.to_string())))?;
    let estimate = route.spec.price.worst(worst.input, worst.output);
    let admission = gw
        .accountant
        .admit(&route.pool, estimate, &route.call)
        .await
        .map_err(db_down)?;
    let who = format!("{} `{}`", owner.kind.as_str(), owner.name);
    match admission {
        Admission::Admitted(t) => Ok((t, worst)),
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

/// Sends the bounded request to the model's provider (an upstream takes the
/// body itself).
async fn dispatch(
    gw: &Gateway,
    route: &Route,
    req: &mut CallRequest,
    max_out: u64,
) -> Result<Reply, ProviderError> {
    match &route.spec.provider {
        Provider::Dummy => Ok(dummy::call(
            req.kind,
            &req.body,
            &req.model,
            &route.call.request_id,
            max_out,
            req.stream,
            req.include_usage,
        )),
        Provider::Anthropic {
            base_url,
            api_key_env,
            upstream_model,
        } => {
            let target = anthropic::Target {
                base_url,
                api_key_env: api_key_env.as_deref(),
                upstream_model,
                timeout: route
                    .spec
                    .timeout_secs
                    .map_or(UPSTREAM_TIMEOUT, |s| Duration::from_secs(s.into())),
            };
            anthropic::call(
                &gw.http,
                &target,
                req.kind,
                std::mem::take(&mut req.body),
                req.stream,
                req.include_usage,
            )
            .await
        }
        Provider::OpenAi {
            base_url,
            api_key_env,
            upstream_model,
            ..
        } => {
            let target = openai::Target {
                base_url,
                api_key_env: api_key_env.as_deref(),
                upstream_model,
                timeout: route
                    .spec
                    .timeout_secs
                    .map_or(UPSTREAM_TIMEOUT, |s| Duration::from_secs(s.into())),
            };
            openai::call(
                &gw.http,
                &target,
                req.kind,
                // Sent once: moved out rather than copied.
                std::mem::take(&mut req.body),
                req.stream,
                req.include_usage,
            )
            .await
        }
    }
}

/// Charges what the reply cost: at once for a JSON reply, or as the stream
/// ends (however it ends) through the `Meter`.
fn settle(
    reply: Result<Reply, ProviderError>,
    ticket: Ticket,
    route: &Route,
    req: &CallRequest,
    worst: Bound,
) -> Response {
    let price = route.spec.price;
    let typical_input = worst.input.div_ceil(4);
    let outcome = |usage: Usage, code: CallOutcome| Outcome::priced(&price, usage, code);
    match reply {
        Err(e) => {
            // Nothing was served: release the whole reservation.
            let (err, result) = match e {
                ProviderError::Timeout(m) => {
                    (ApiError::UpstreamTimeout(m), CallOutcome::UpstreamTimeout)
                }
                ProviderError::Failed(m) => (ApiError::Upstream(m), CallOutcome::UpstreamError),
                ProviderError::Unsupported(m) => (ApiError::InvalidRequest(m), CallOutcome::Refused),
            };
            ticket.settle(outcome(Usage::default(), result));
            err.into_response()
        }
        Ok(Reply::Json { body: reply, usage }) => {
            // Some local servers omit usage; never charge 0 for what they produced.
            let reported = reply.get("usage").is_some_and(|u| u.is_object());
            let (usage, result) = if reported || req.kind == Kind::Embeddings {
                (usage, CallOutcome::Ok)
            } else {
                (
                    estimate_usage(typical_input, &reply),
                    CallOutcome::OkWithoutUsage,
                )
            };
            ticket.settle(outcome(usage, result));
            Json(reply).into_response()
        }
        Ok(Reply::Stream(chunks)) => {
            let meter = Meter {
                ticket: Some(ticket),
                price,
                typical_input,
                reported: None,
                produced: 0,
                finished: false,
                failed: false,
            };
            sse_response(chunks, meter)
        }
    }
}

/// Usage for a reply that reported none: the typical input estimate, and
/// about four bytes a token for the text that came back.
fn estimate_usage(typical_input: u64, reply: &Value) -> Usage {
    let text: usize = reply["choices"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    c["message"]["content"]
                        .as_str()
                        .or(c["text"].as_str())
                        .map_or(0, str::len)
                })
                .sum()
        })
        .unwrap_or(0);
    Usage {
        input: typical_input,
        output: (text as u64).div_ceil(4),
        ..Usage::default()
    }
}

/// Counts what a stream delivered and settles when the stream is dropped,
/// whether it finished, failed upstream, or the client went away.
struct Meter {
    ticket: Option<Ticket>,
    price: Price,
    typical_input: u64,
    reported: Option<Usage>,
    produced: u64,
    finished: bool,
    failed: bool,
}

impl Meter {
    fn observe(&mut self, chunk: &Chunk) {
        self.produced += chunk.tokens;
        if chunk.usage.is_some() {
            self.reported = chunk.usage;
        }
    }

    fn outcome(&self) -> Outcome {
        let (usage, outcome) = match (self.reported, self.finished, self.failed) {
            (Some(u), true, _) => (u, CallOutcome::Ok),
            (Some(u), false, _) => (u, CallOutcome::ClientDisconnected),
            // Nothing produced and the upstream failed: release everything.
            (None, _, true) if self.produced == 0 => (Usage::default(), CallOutcome::UpstreamError),
            (None, _, failed) => (
                Usage {
                    input: self.typical_input,
                    output: self.produced,
                    ..Usage::default()
                },
                if failed {
                    CallOutcome::UpstreamErrorMidStream
                } else if self.finished {
                    CallOutcome::OkWithoutUsage
                } else {
                    CallOutcome::ClientDisconnected
                },
            ),
        };
        Outcome::priced(&self.price, usage, outcome)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let o = self.outcome();
            ticket.settle(o);
        }
    }
}

fn sse_response(chunks: ChunkStream, meter: Meter) -> Response {
    let state = (chunks, meter, false);
    let body = futures::stream::unfold(state, |(mut chunks, mut meter, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    meter.observe(&chunk);
                    if !chunk.forward {
                        continue;
                    }
                    let frame = Bytes::from(format!("data: {}\n\n", chunk.data));
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(frame),
                        (chunks, meter, false),
                    ));
                }
                Some(Err(e)) => {
                    meter.failed = true;
                    let (code, msg) = match e {
                        ProviderError::Timeout(m) => ("upstream_timeout", m),
                        ProviderError::Failed(m) => ("upstream_error", m),
                        ProviderError::Unsupported(m) => ("invalid_request", m),
                    };
                    let err = serde_json::json!({"error": {"message": msg, "type": "api_error", "code": code}});
                    let frame = Bytes::from(format!("data: {err}\n\n"));
                    return Some((Ok(frame), (chunks, meter, true)));
                }
                None => {
                    meter.finished = true;
                    let frame = Bytes::from_static(b"data: [DONE]\n\n");
                    return Some((Ok(frame), (chunks, meter, true)));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
