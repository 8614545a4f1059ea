//! Sends a bounded call to one of the model's deployments, and to another
//! while nothing has reached the caller yet: a JSON call until it has a
//! reply, a stream until its first event. At most `MAX_ATTEMPTS` attempts,
//! all within the call's one deadline.

use super::super::providers::{anthropic, dummy, openai, ChunkStream, ProviderError, Reply};
use super::super::Gateway;
use super::{CallRequest, Route};
use app::domain::config::{Deployment, Provider};
use app::ssr::balancer::Attempt;
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Attempts one call may make, across the model's deployments.
pub const MAX_ATTEMPTS: usize = 3;

/// One attempt on one deployment, with what is left of the deadline.
async fn attempt(
    gw: &Gateway,
    d: &Deployment,
    route: &Route,
    req: &CallRequest,
    body: Value,
    max_out: u64,
    timeout: Duration,
) -> Result<Reply, ProviderError> {
    match &d.provider {
        Provider::Dummy => Ok(dummy::call(
            route.wire,
            &body,
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
                timeout,
            };
            anthropic::call(
                &gw.http,
                &target,
                route.wire,
                body,
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
                timeout,
            };
            openai::call(
                &gw.http,
                &target,
                route.wire,
                body,
                req.stream,
                req.include_usage,
            )
            .await
        }
    }
}

/// The `reason` label of a failed attempt (`crate::metrics::UPSTREAM_REASONS`).
fn reason(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::Status { .. } => "status",
        ProviderError::Timeout(_) => "timeout",
        ProviderError::Failed(_) => "failed",
        ProviderError::Unsupported(_) => "unsupported",
        ProviderError::Unavailable(_) => "no_deployment",
    }
}

/// A stream counts as served once its first event arrives; until then its
/// failure can still be retried elsewhere.
async fn first_event(reply: Reply, left: Duration) -> Result<Reply, ProviderError> {
    let Reply::Stream(mut s) = reply else {
        return Ok(reply);
    };
    match tokio::time::timeout(left, s.next()).await {
        Err(_) => Err(ProviderError::Timeout(
            "the upstream model server sent nothing before the call's deadline".into(),
        )),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(first))) => {
            let rest: ChunkStream =
                Box::pin(futures::stream::once(async move { Ok(first) }).chain(s));
            Ok(Reply::Stream(rest))
        }
        Ok(None) => Ok(Reply::Stream(s)),
    }
}

/// Tries deployments until one serves. Returns the reply (or the last
/// error) and the attempt that produced it, which stays in flight until
/// dropped (a stream keeps it until it ends).
pub async fn dispatch(
    gw: &Gateway,
    route: &Route,
    req: &mut CallRequest,
    max_out: u64,
    deadline: Instant,
) -> (Result<Reply, ProviderError>, Option<Attempt>) {
    let spec = &route.spec;
    let mut tried = Vec::new();
    let mut last = None;
    while tried.len() < MAX_ATTEMPTS.min(spec.deployments.len()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The call's deadline is spent: no deployment is to blame for
            // that, so none is tried (and none has its breaker tripped).
            last.get_or_insert(ProviderError::Timeout(format!(
                "`{}` did not answer within the call's deadline",
                spec.name
            )));
            break;
        }
        let Some((i, held)) = gw.ctx.balancer.begin(spec, &tried) else {
            break;
        };
        tried.push(i);
        let d = &spec.deployments[i];
        let timeout = d
            .timeout_secs
            .map_or(left, |s| left.min(Duration::from_secs(s.into())));
        let more = tried.len() < MAX_ATTEMPTS.min(spec.deployments.len());
        // Copied only while another attempt may need it; the last goes by move.
        let body = if more {
            req.body.clone()
        } else {
            std::mem::take(&mut req.body)
        };
        let result = match attempt(gw, d, route, req, body, max_out, timeout).await {
            Ok(reply) => first_event(reply, timeout).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(reply) => return (Ok(reply), Some(held.succeeded())),
            Err(e) => {
                let failure = e.failure();
                held.failed(failure, &e.to_string());
                gw.metrics.upstream_error(&spec.name, reason(&e));
                tracing::warn!(model = %spec.name, deployment = %d.name, request_id = %route.call.request_id, "upstream attempt failed: {e}");
                let retry = failure.is_some();
                last = Some(e);
                if !retry {
                    break;
                }
            }
        }
    }
    let err = last.unwrap_or_else(|| {
        gw.metrics.upstream_error(&spec.name, "no_deployment");
        ProviderError::Unavailable(format!(
            "no deployment of `{}` can take the call now: each is cooling down after failures or is full; retry shortly",
            spec.name
        ))
    });
    (Err(err), None)
}
