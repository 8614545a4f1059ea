//! Token usage as each protocol reports it, read into one shape that says
//! exactly what is priced how.
//!
//! The protocols count differently, and the billing bugs of other gateways
//! come from mixing them up:
//! - OpenAI chat and completions (and vLLM, Ollama, llama.cpp):
//!   `prompt_tokens` *includes* `prompt_tokens_details.cached_tokens`, and
//!   `completion_tokens` *includes* `completion_tokens_details.reasoning_tokens`.
//! - Responses: `input_tokens` includes `input_tokens_details.cached_tokens`,
//!   `output_tokens` includes `output_tokens_details.reasoning_tokens`.
//! - Anthropic: `input_tokens` *excludes* `cache_read_input_tokens` and
//!   `cache_creation_input_tokens`; `output_tokens` includes thinking.
//!
//! So reasoning is charged once, as output, and shown separately; cached
//! reads and cache writes are split off the input and priced on their own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tokens of one call, split the way they are priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input read at the full input price (neither a cache read nor a write).
    pub input: u64,
    /// Input served from the provider's prompt cache.
    pub cached_input: u64,
    /// Input written to the provider's prompt cache (Anthropic).
    pub cache_write: u64,
    /// Every output token, reasoning included.
    pub output: u64,
    /// Of `output`, the reasoning ("thinking") tokens: shown, never charged twice.
    pub reasoning: u64,
}

fn count(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    // Some servers send floats or negative numbers; neither may lower a charge
    // below what an honest count would give, nor panic.
    match at {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f.ceil() as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

impl Usage {
    /// Every input token, however priced.
    pub fn input_total(&self) -> u64 {
        self.input
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
    }

    /// Reads an OpenAI chat, completions or embeddings `usage` object (also
    /// what vLLM, Ollama's `/v1` and llama.cpp send). `None` when it is not
    /// an object with `prompt_tokens`.
    pub fn from_openai(u: &Value) -> Option<Usage> {
        if !u.is_object() || !u.get("prompt_tokens").is_some_and(Value::is_number) {
            return None;
        }
        let prompt = count(u, &["prompt_tokens"]);
        let output = count(u, &["completion_tokens"]);
        Some(Self::split(
            prompt,
            count(u, &["prompt_tokens_details", "cached_tokens"]),
            output,
            count(u, &["completion_tokens_details", "reasoning_tokens"]),
        ))
    }

    /// Reads a Responses API `usage` object.
    pub fn from_responses(u: &Value) -> Option<Usage> {
        if !u.is_object() || !u.get("input_tokens").is_some_and(Value::is_number) {
            return None;
        }
        Some(Self::split(
            count(u, &["input_tokens"]),
            count(u, &["input_tokens_details", "cached_tokens"]),
            count(u, &["output_tokens"]),
            count(u, &["output_tokens_details", "reasoning_tokens"]),
        ))
    }

    /// Reads an Anthropic `usage` object. Anthropic does not report thinking
    /// tokens apart from output, so `reasoning` is 0.
    pub fn from_anthropic(u: &Value) -> Option<Usage> {
        if !u.is_object()
            || !(u.get("input_tokens").is_some_and(Value::is_number)
                || u.get("output_tokens").is_some_and(Value::is_number))
        {
            return None;
        }
        Some(Usage {
            input: count(u, &["input_tokens"]),
            cached_input: count(u, &["cache_read_input_tokens"]),
            cache_write: count(u, &["cache_creation_input_tokens"]),
            output: count(u, &["output_tokens"]),
            reasoning: 0,
        })
    }

    /// From totals that include their cached and reasoning parts; a part
    /// larger than its total is cut to the total.
    fn split(prompt: u64, cached: u64, output: u64, reasoning: u64) -> Usage {
        let cached = cached.min(prompt);
        Usage {
            input: prompt - cached,
            cached_input: cached,
            cache_write: 0,
            output,
            reasoning: reasoning.min(output),
        }
    }

    /// As an OpenAI chat `usage` object.
    pub fn to_openai(&self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.input_total(),
            "completion_tokens": self.output,
            "total_tokens": self.input_total().saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cached_input},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }

    /// As a Responses API `usage` object.
    pub fn to_responses(&self) -> Value {
        serde_json::json!({
            "input_tokens": self.input_total(),
            "input_tokens_details": {"cached_tokens": self.cached_input},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.input_total().saturating_add(self.output),
        })
    }

    /// As an Anthropic `usage` object.
    pub fn to_anthropic(&self) -> Value {
        serde_json::json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached_input,
            "output_tokens": self.output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_larger_than_their_totals_are_cut() {
        let u = Usage::from_openai(&json!({
            "prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 9}
        }))
        .unwrap();
        assert_eq!(
            (u.input, u.cached_input, u.output, u.reasoning),
            (0, 10, 5, 5)
        );
    }

    #[test]
    fn odd_numbers_never_panic_or_undercount() {
        let u =
            Usage::from_openai(&json!({"prompt_tokens": 2.5, "completion_tokens": -3})).unwrap();
        assert_eq!((u.input, u.output), (3, 0));
        assert_eq!(Usage::from_openai(&json!({"prompt_tokens": "7"})), None);
        assert_eq!(Usage::from_openai(&json!(null)), None);
        assert_eq!(Usage::from_anthropic(&json!({"foo": 1})), None);
    }

    #[test]
    fn round_trips_through_every_shape() {
        let u = Usage {
            input: 100,
            cached_input: 20,
            cache_write: 0,
            output: 30,
            reasoning: 10,
        };
        assert_eq!(Usage::from_openai(&u.to_openai()), Some(u));
        assert_eq!(Usage::from_responses(&u.to_responses()), Some(u));
        let a = Usage {
            cache_write: 7,
            reasoning: 0,
            ..u
        };
        assert_eq!(Usage::from_anthropic(&a.to_anthropic()), Some(a));
    }
}
