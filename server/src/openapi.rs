//! `GET /openapi.json`: the OpenAPI 3.1 document of `/v1`, `/healthz` and
//! `/metrics`, written by hand in `docs/openapi.json` and checked against
//! the router and the error shapes by the tests below.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use crate::gateway::error::{render, ApiError};
    use crate::gateway::providers::Kind;
    use axum::response::{IntoResponse, Response};
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).unwrap_or(Value::Null)
    }

    /// `(path, methods)` of every `.route(…)` in a router's source, but
    /// the catch-alls (`{*rest}`).
    fn routes(source: &str) -> BTreeMap<String, BTreeSet<&'static str>> {
        let mut out = BTreeMap::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            if path.contains("{*") {
                continue;
            }
            let body = chunk.split(".layer(").next().unwrap_or(chunk);
            let mut methods = BTreeSet::new();
            for (needle, method) in [
                ("metered(", "post"),
                ("post(", "post"),
                ("get(", "get"),
                (".delete(", "delete"),
            ] {
                if body.contains(needle) {
                    methods.insert(method);
                }
            }
            out.insert(path.to_string(), methods);
        }
        out
    }

    #[test]
    fn every_route_is_documented_with_its_methods_and_nothing_else() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut code = routes(include_str!("gateway/mod.rs"));
        let serve = routes(include_str!("serve.rs"));
        for p in ["/healthz", "/metrics", "/openapi.json"] {
            code.insert(p.to_string(), serve[p].clone());
        }
        let Some(paths) = doc["paths"].as_object() else {
            unreachable!("the document has paths")
        };
        let documented: BTreeMap<String, BTreeSet<&str>> = paths
            .iter()
            .map(|(p, ops)| {
                let methods = ["get", "post", "delete", "put", "patch"]
                    .into_iter()
                    .filter(|m| ops.get(*m).is_some())
                    .collect();
                (p.clone(), methods)
            })
            .collect();
        assert_eq!(code, documented);
    }

    /// A small JSON Schema check: `$ref`, `type`, `const`, `enum`,
    /// `required`, `properties` and `additionalProperties: false` where given.
    fn conforms(doc: &Value, schema: &Value, v: &Value) -> bool {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            return conforms(doc, &doc["components"]["schemas"][name], v);
        }
        let type_ok = |t: &str| match t {
            "object" => v.is_object(),
            "string" => v.is_string(),
            "null" => v.is_null(),
            "array" => v.is_array(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            _ => false,
        };
        let typed = match &schema["type"] {
            Value::String(t) => type_ok(t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(type_ok),
            _ => true,
        };
        let consts = schema.get("const").is_none_or(|c| c == v)
            && schema["enum"].as_array().is_none_or(|e| e.contains(v));
        let required = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .all(|k| v.get(k).is_some());
        let props = schema["properties"].as_object();
        let fields =
            v.as_object()
                .into_iter()
                .flatten()
                .all(|(k, fv)| match props.and_then(|p| p.get(k)) {
                    Some(s) => conforms(doc, s, fv),
                    None => schema["additionalProperties"] != Value::Bool(false),
                });
        typed && consts && required && fields
    }

    async fn body(resp: Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn documented_errors_have_the_shape_the_gateway_sends() {
        let doc = doc();
        let errors = [
            ApiError::InvalidRequest("x".into()),
            ApiError::InsufficientCoins("x".into()),
            ApiError::UpstreamTimeout("x".into()),
        ];
        for e in errors {
            let anthropic = body(render(
                Kind::Messages,
                ApiError::InvalidRequest(e.to_string()),
            ))
            .await;
            let openai = body(e.into_response()).await;
            let schemas = &doc["components"]["schemas"];
            assert!(
                conforms(&doc, &schemas["OpenAIError"], &openai.1),
                "{openai:?}"
            );
            assert!(
                conforms(&doc, &schemas["AnthropicError"], &anthropic.1),
                "{anthropic:?}"
            );
            assert!(!conforms(&doc, &schemas["OpenAIError"], &anthropic.1));
            assert!(!conforms(&doc, &schemas["AnthropicError"], &openai.1));
        }
        for path in ["/v1/chat/completions", "/v1/messages"] {
            let (status, v) = body(crate::body_limit::too_large(path, 1024)).await;
            let want = if path.starts_with("/v1/messages") {
                "AnthropicError"
            } else {
                "OpenAIError"
            };
            assert_eq!(status, 413);
            assert!(
                conforms(&doc, &doc["components"]["schemas"][want], &v),
                "{v}"
            );
        }
    }

    #[test]
    fn error_responses_use_the_shape_of_their_protocol() {
        let doc = doc();
        let Some(paths) = doc["paths"].as_object() else {
            unreachable!("the document has paths")
        };
        let mut checked = 0;
        for (path, ops) in paths {
            for (method, op) in ops.as_object().into_iter().flatten() {
                for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                    let Some(schema) =
                        resp["content"]["application/json"]["schema"]["$ref"].as_str()
                    else {
                        continue;
                    };
                    if !status.starts_with('4') && !status.starts_with('5') || path == "/healthz" {
                        continue;
                    }
                    let want = if path.starts_with("/v1/messages") {
                        "AnthropicError"
                    } else {
                        "OpenAIError"
                    };
                    assert!(schema.ends_with(want), "{method} {path} {status}: {schema}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "{checked}");
        // Every operation under /v1 needs a key.
        for (path, ops) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
            for (method, op) in ops.as_object().into_iter().flatten() {
                assert!(
                    op.get("security").is_none(),
                    "{method} {path} overrides the key requirement"
                );
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} has no 401"
                );
            }
        }
    }
}
