//! One metered model call: resolve the model, check access, reserve the
//! worst-case cost, call the provider, settle the actual cost.

use super::accountant::{Admission, CallInfo, Outcome, Ticket};
use super::error::{invalid_json, ApiError};
use super::providers::{dummy, openai, Chunk, ChunkStream, Kind, ProviderError, Reply, Usage};
use super::{auth, consent_url, pool_of, Gateway, RequestId};
use app::domain::bound::{bound, ModelLimits};
use app::domain::config::{Config, ModelSpec, OwnerSettings, Provider, SettingsSource};
use app::domain::money::format_coins;
use app::domain::policy::{Rule, Verdict};
use app::domain::pricing::Price;
use app::ssr::consents;
use app::ssr::keys::KeyOwner;
use app::ssr::owners::OwnerKind;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
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

pub async fn call(
    gw: Gateway,
    id: RequestId,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let owner = auth(&gw, &headers).await?;
    let Json(mut body) = body.map_err(invalid_json)?;
    if !body.is_object() {
        return Err(ApiError::InvalidRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    let model_name = body["model"]
        .as_str()
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "`model` is required: the name of a model in GET /v1/models".into(),
            )
        })?
        .to_string();
    let snapshot = gw.ctx.config.load_full();
    let spec: ModelSpec = snapshot.config.models.get(&model_name).cloned().ok_or_else(|| {
        ApiError::ModelNotFound(format!(
            "model `{model_name}` is not in this gateway's catalog; GET /v1/models lists the models this key may call"
        ))
    })?;

    let pool = pool_of(&owner)?.clone();

    let call = CallInfo {
        request_id: id.0.clone(),
        key_id: Some(owner.key_id),
        model: model_name.clone(),
    };

    // Access, from the in-memory snapshot; consent only for graylisted models.
    let (settings, _) = settings_for(&snapshot.config, &owner);
    let mut decision = settings.access.decide(&model_name, false);
    if decision.verdict == Verdict::ConsentRequired
        && consents::has_consent(&gw.ctx.db, owner.kind, owner.owner_id, &model_name)
            .await
            .map_err(db_down)?
    {
        decision = settings.access.decide(&model_name, true);
    }
    match decision.verdict {
        Verdict::Allowed => {}
        Verdict::Denied => {
            gw.accountant.refuse(pool.id, &call, "model_not_allowed");
            let hint = match decision.rule {
                Rule::Blacklist => "it is on the blacklist",
                _ => "it is not listed and unlisted models are denied",
            };
            return Err(ApiError::ModelNotAllowed(format!(
                "{} `{}` may not call `{model_name}`: {hint} ({}). An admin can change model_access in the config.",
                owner.kind.as_str(),
                owner.name,
                decision.rule
            )));
        }
        Verdict::ConsentRequired => {
            gw.accountant.refuse(pool.id, &call, "consent_required");
            return Err(ApiError::ConsentRequired(format!(
                "`{model_name}` needs recorded consent before {} `{}` may call it ({}). Record it at {}",
                owner.kind.as_str(),
                owner.name,
                decision.rule,
                consent_url(&gw, &owner)
            )));
        }
    }

    // Reserve the worst case before anything goes upstream.
    let stream = kind != Kind::Embeddings && body["stream"].as_bool() == Some(true);
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let worst = bound(
        kind,
        &mut body,
        ModelLimits {
            max_output_tokens: spec.max_output_tokens,
            media: &spec.media,
            pass_through: &spec.pass_through,
        },
    )
    .map_err(|r| {
        gw.accountant.refuse(pool.id, &call, "invalid_request");
        ApiError::InvalidRequest(r.to_string())
    })?;
    let max_out = worst.per_choice;
    let typical_input = worst.input.div_ceil(4);
    let estimate = spec.price.cost(worst.input, worst.output);
    let ticket = match gw
        .accountant
        .admit(&pool, estimate, &call)
        .await
        .map_err(db_down)?
    {
        Admission::Admitted(t) => t,
        Admission::Blocked => {
            gw.accountant.refuse(pool.id, &call, "pool_blocked");
            return Err(ApiError::PoolBlocked(format!(
                "the coin pool of {} `{}` is blocked (max: 0); an admin can raise its max in the config",
                owner.kind.as_str(),
                owner.name
            )));
        }
        Admission::Insufficient { balance } => {
            gw.accountant.refuse(pool.id, &call, "insufficient_coins");
            return Err(ApiError::InsufficientCoins(format!(
                "this call may cost up to {} coins but {} `{}` has {} left; lower max_tokens, shorten the prompt, or wait for the pool to refill (GET /v1/balance)",
                format_coins(estimate),
                owner.kind.as_str(),
                owner.name,
                format_coins(balance)
            )));
        }
    };

    let outcome = |usage: Usage, outcome: &str| Outcome {
        tokens_in: usage.prompt as i64,
        tokens_out: usage.completion as i64,
        cost: spec.price.cost(usage.prompt, usage.completion),
        outcome: outcome.to_string(),
    };

    let reply = match &spec.provider {
        Provider::Dummy => Ok(dummy::call(
            kind,
            &body,
            &model_name,
            &id.0,
            max_out,
            stream,
            include_usage,
        )),
        Provider::OpenAi {
            base_url,
            api_key_env,
            upstream_model,
        } => {
            let target = openai::Target {
                base_url,
                api_key_env: api_key_env.as_deref(),
                upstream_model,
                timeout: spec
                    .timeout_secs
                    .map_or(UPSTREAM_TIMEOUT, |s| Duration::from_secs(s.into())),
            };
            openai::call(&gw.http, &target, kind, body.clone(), stream, include_usage).await
        }
    };

    match reply {
        Err(e) => {
            // Nothing was served: release the whole reservation.
            let (err, result) = match e {
                ProviderError::Timeout(m) => (ApiError::UpstreamTimeout(m), "upstream_timeout"),
                ProviderError::Failed(m) => (ApiError::Upstream(m), "upstream_error"),
            };
            ticket.settle(outcome(Usage::default(), result));
            Err(err)
        }
        Ok(Reply::Json { body: reply, usage }) => {
            // Some local servers omit usage; never charge 0 for what they produced.
            let (usage, result) =
                if reply.get("usage").is_some_and(|u| u.is_object()) || kind == Kind::Embeddings {
                    (usage, "ok")
                } else {
                    (estimate_usage(typical_input, &reply), "ok_without_usage")
                };
            ticket.settle(outcome(usage, result));
            Ok(Json(reply).into_response())
        }
        Ok(Reply::Stream(chunks)) => {
            let meter = Meter {
                ticket: Some(ticket),
                price: spec.price,
                typical_input,
                reported: None,
                produced: 0,
                finished: false,
                failed: false,
            };
            Ok(sse_response(chunks, meter))
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
        prompt: typical_input,
        completion: (text as u64).div_ceil(4),
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
            (Some(u), true, _) => (u, "ok"),
            (Some(u), false, _) => (u, "client_disconnected"),
            // Nothing produced and the upstream failed: release everything.
            (None, _, true) if self.produced == 0 => (Usage::default(), "upstream_error"),
            (None, _, failed) => (
                Usage {
                    prompt: self.typical_input,
                    completion: self.produced,
                },
                if failed {
                    "upstream_error_mid_stream"
                } else if self.finished {
                    "ok_without_usage"
                } else {
                    "client_disconnected"
                },
            ),
        };
        Outcome {
            tokens_in: usage.prompt as i64,
            tokens_out: usage.completion as i64,
            cost: self.price.cost(usage.prompt, usage.completion),
            outcome: outcome.to_string(),
        }
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
