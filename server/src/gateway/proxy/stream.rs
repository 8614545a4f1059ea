//! A streamed reply: the upstream's events metered as they pass, translated
//! into the caller's protocol when the two differ, and settled when the
//! stream is dropped, however it ends.

use super::super::accountant::{Outcome, Ticket};
use super::super::protocol::{end_frame, frame, frame_value, stream_error, Transcode};
use super::super::providers::{Chunk, ChunkStream, Kind, ProviderError, Usage};
use super::super::Gateway;
use super::chain::Chain;
use app::domain::outcome::CallOutcome;
use app::domain::pricing::Price;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use std::collections::VecDeque;

/// Counts what a stream delivered and settles when the stream is dropped,
/// whether it finished, failed upstream, or the client went away.
pub struct Meter {
    pub ticket: Option<Ticket>,
    pub price: Price,
    pub typical_input: u64,
    pub reported: Option<Usage>,
    pub produced: u64,
    pub finished: bool,
    pub failed: bool,
}

impl Meter {
    pub fn new(ticket: Ticket, price: Price, typical_input: u64) -> Meter {
        Meter {
            ticket: Some(ticket),
            price,
            typical_input,
            reported: None,
            produced: 0,
            finished: false,
            failed: false,
        }
    }

    fn observe(&mut self, chunk: &Chunk) {
        self.produced += chunk.tokens;
        if chunk.usage.is_some() {
            self.reported = chunk.usage;
        }
    }

    fn outcome(&self) -> Outcome {
        let (usage, outcome) = match (self.reported, self.finished, self.failed) {
            (Some(u), true, _) => (u, CallOutcome::Ok),
            (Some(u), false, true) => (u, CallOutcome::UpstreamErrorMidStream),
            (Some(u), false, false) => (u, CallOutcome::ClientDisconnected),
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

/// How the upstream's events reach the caller.
pub struct Relay {
    /// The deployment serving the stream, in flight until it ends.
    #[allow(dead_code)]
    pub attempt: Option<app::ssr::balancer::Attempt>,
    pub kind: Kind,
    /// Translates the upstream's protocol into the caller's; `None` when
    /// they are the same and events pass as they are.
    pub transcode: Option<Box<dyn Transcode>>,
    /// A Responses call: its finished response is stored before the caller
    /// sees it complete.
    pub chain: Option<Chain>,
    pub model: String,
    pub gw: Gateway,
}

struct State {
    chunks: ChunkStream,
    meter: Meter,
    relay: Relay,
    pending: VecDeque<Bytes>,
    ended: bool,
}

pub fn respond(chunks: ChunkStream, meter: Meter, relay: Relay) -> Response {
    let state = State {
        chunks,
        meter,
        relay,
        pending: VecDeque::new(),
        ended: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(b), st));
            }
            if st.ended {
                return None;
            }
            let next = st.chunks.next().await;
            st.step(next).await;
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

impl State {
    async fn step(&mut self, next: Option<Result<Chunk, ProviderError>>) {
        let mut out = Vec::new();
        match next {
            Some(Ok(chunk)) => {
                self.meter.observe(&chunk);
                match self.relay.transcode.as_mut() {
                    Some(t) => {
                        let v: Value = serde_json::from_str(&chunk.data).unwrap_or(Value::Null);
                        t.event(&v, &mut out);
                    }
                    None => return self.pass(chunk).await,
                }
            }
            Some(Err(e)) => {
                self.meter.failed = true;
                self.ended = true;
                let (err, _) = super::provider_error(e);
                let (code, msg) = (err.code(), err.to_string());
                match self.relay.transcode.as_mut() {
                    Some(t) => t.fail(code, &msg, &mut out),
                    None => out.push(stream_error(self.relay.kind, code, &msg)),
                }
            }
            None => {
                self.meter.finished = true;
                self.ended = true;
                if let Some(t) = self.relay.transcode.as_mut() {
                    t.finish(&mut out);
                }
            }
        }
        for ev in out {
            store_if_final(self.relay.chain.as_ref(), &self.relay.gw, &ev).await;
            self.pending.push_back(frame_value(self.relay.kind, &ev));
        }
        if self.ended && self.meter.finished {
            self.pending.extend(end_frame(self.relay.kind));
        }
    }

    /// An event of the caller's own protocol, passed on; a Responses
    /// upstream's response objects are made the gateway's own first.
    async fn pass(&mut self, chunk: Chunk) {
        if !chunk.forward {
            return;
        }
        let is_response = chunk
            .event
            .as_deref()
            .is_some_and(|e| e.starts_with("response."))
            && chunk.data.contains("\"response\"");
        match (&self.relay.chain, is_response) {
            (Some(chain), true) => {
                let mut v: Value = serde_json::from_str(&chunk.data).unwrap_or(Value::Null);
                if v["response"].is_object() {
                    chain.adopt(&mut v["response"], &self.relay.model);
                }
                store_if_final(Some(chain), &self.relay.gw, &v).await;
                self.pending.push_back(frame_value(self.relay.kind, &v));
            }
            _ => {
                self.pending
                    .push_back(frame(self.relay.kind, &chunk.data, chunk.event.as_deref()))
            }
        }
    }
}

/// Stores a Responses call's finished response before the caller sees it
/// complete, so a `GET` right after finds it.
async fn store_if_final(chain: Option<&Chain>, gw: &Gateway, ev: &Value) {
    if let Some(chain) = chain {
        if matches!(
            ev["type"].as_str(),
            Some("response.completed" | "response.incomplete")
        ) {
            chain.save(gw, &ev["response"]).await;
        }
    }
}
