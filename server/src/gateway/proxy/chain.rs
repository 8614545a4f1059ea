//! The Responses API's own state: a call's id, whether it is stored, its
//! `previous_response_id` expanded into `input` (so the chained history is
//! bounded and charged like any input), and saving the finished response.

use super::super::error::ApiError;
use super::super::protocol::responses::{as_history, input_items};
use super::super::stored::not_found;
use super::super::Gateway;
use app::ssr::keys::KeyOwner;
use app::ssr::now_ms;
use app::ssr::responses::{self, SaveError, StoredResponse};
use serde_json::{Map, Value};

/// What a Responses call carries from its request to its stored result.
pub struct Chain {
    pub id: String,
    pub store: bool,
    /// The request's fields other than `input`, echoed in the response.
    pub echo: Value,
    /// Every input item of this turn, history included (kept only to store).
    pub context: Vec<Value>,
    owner: (app::ssr::owners::OwnerKind, i64),
    model: String,
}

/// Expands `previous_response_id` into `input` (only the owner's own stored
/// responses can be chained; anything else is 404) and returns the call's
/// state.
pub async fn expand(
    gw: &Gateway,
    owner: &KeyOwner,
    model: &str,
    body: &mut Value,
) -> Result<Chain, ApiError> {
    let map = body
        .as_object_mut()
        .ok_or_else(|| ApiError::InvalidRequest("the request body must be a JSON object".into()))?;
    let previous = map.remove("previous_response_id");
    let mut items = Vec::new();
    match &previous {
        None | Some(Value::Null) => {}
        Some(Value::String(pid)) => {
            let stored = responses::load(&gw.ctx.db, owner.kind, owner.owner_id, pid, now_ms())
                .await
                .map_err(super::db_down)?
                .ok_or_else(|| not_found(Some(pid)))?;
            items = stored.context.as_array().cloned().unwrap_or_default();
            items.extend(as_history(&stored.response["output"]));
        }
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "`previous_response_id` must be the id of a stored response".into(),
            ))
        }
    }
    let store = map.get("store").and_then(Value::as_bool).unwrap_or(true);
    if previous.is_some() || store {
        items.extend(input_items(map.get("input").unwrap_or(&Value::Null)));
        if previous.is_some() {
            map.insert("input".into(), Value::Array(items.clone()));
        }
    }
    let mut echo: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "input")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    echo.insert(
        "previous_response_id".into(),
        previous.unwrap_or(Value::Null),
    );
    Ok(Chain {
        id: super::super::protocol::new_id("resp_"),
        store,
        echo: Value::Object(echo),
        context: if store { items } else { Vec::new() },
        owner: (owner.kind, owner.owner_id),
        model: model.to_string(),
    })
}

impl Chain {
    /// Saves the finished response for its owner, if the call asked for
    /// it. A failure is logged: the reply has been produced and paid for.
    pub async fn save(&self, gw: &Gateway, response: &Value) {
        if !self.store {
            return;
        }
        let now = now_ms();
        let retention = gw.ctx.config.load().config.server.responses_retention_ms();
        let row = StoredResponse {
            id: self.id.clone(),
            owner_kind: self.owner.0,
            owner_id: self.owner.1,
            model: self.model.clone(),
            created_at: now,
            expires_at: now.saturating_add(retention),
            context: Value::Array(self.context.clone()),
            response: response.clone(),
        };
        match responses::save(&gw.ctx.db, &row).await {
            Ok(()) => {}
            Err(SaveError::TooLarge { bytes }) => tracing::warn!(
                "response {} was not stored: {bytes} bytes is over the limit",
                self.id
            ),
            Err(e) => tracing::error!("response {} was not stored: {e}", self.id),
        }
    }

    /// A native upstream's response object, made the gateway's own: its id,
    /// the caller's model name and the caller's `previous_response_id`.
    pub fn adopt(&self, response: &mut Value, model: &str) {
        response["id"] = Value::String(self.id.clone());
        response["model"] = Value::String(model.to_string());
        response["previous_response_id"] = self.echo["previous_response_id"].clone();
        response["store"] = Value::Bool(self.store);
    }
}
