//! The most an upstream can be made to do for one request, computed before
//! anything goes upstream, so that the reservation is a true upper bound.
//!
//! Every request field is one of:
//! - a *length* field (`max_tokens`, `max_completion_tokens`, llama.cpp's
//!   `n_predict`, TGI's `max_new_tokens`, Ollama's `options.num_predict`):
//!   each one given is rewritten to the call's output limit;
//! - a *choice count* (`n`, `best_of`): bounded, and multiplies the output;
//! - *input*: messages, prompts, tools, schemas, … Every byte sent upstream
//!   counts as a token (a BPE token is at least one byte), plus a margin for
//!   each message's chat template. Images, audio and files have no byte
//!   bound, so they are refused unless the model declares what one may cost;
//! - a known-harmless sampling option, forwarded as is (and counted as input);
//! - anything else: refused with the field's name, unless the model lists it
//!   under `pass_through` (the admin's call; it still counts as input).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completions,
    Embeddings,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
}

impl Kind {
    /// The endpoint under an OpenAI-style `/v1` base URL.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Chat => "/chat/completions",
            Kind::Completions => "/completions",
            Kind::Embeddings => "/embeddings",
            Kind::Responses => "/responses",
            Kind::Messages => "/messages",
        }
    }

    /// The field that holds the prompt.
    pub fn prompt_field(self) -> &'static str {
        match self {
            Kind::Chat | Kind::Messages => "messages",
            Kind::Completions => "prompt",
            Kind::Embeddings | Kind::Responses => "input",
        }
    }

    /// The length field added when a call gives none.
    fn length_field(self) -> &'static str {
        match self {
            Kind::Responses => "max_output_tokens",
            _ => "max_tokens",
        }
    }
}

/// Output tokens allowed per choice when neither the call nor the model sets a limit.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
/// Template tokens around one message or prompt (role markers, separators).
pub const PER_MESSAGE: u64 = 8;
/// The most choices one call may ask for (`n`), as OpenAI allows.
pub const MAX_CHOICES: u64 = 128;
/// The most candidates one call may have generated (`best_of`), as OpenAI allows.
pub const MAX_BEST_OF: u64 = 20;
/// Input Anthropic adds on its own when a call offers tools: its tool-use
/// system prompt (documented as up to a few hundred tokens), with room to spare.
pub const TOOL_PROMPT: u64 = 1024;

/// Tokens one non-text content part may cost at most, declared per model.
/// A kind of part with no declared cost is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCosts {
    pub image: Option<u32>,
    pub audio: Option<u32>,
    pub file: Option<u32>,
}

/// What the model's config says about bounding a request.
#[derive(Debug, Clone, Copy)]
pub struct ModelLimits<'a> {
    pub max_output_tokens: Option<u32>,
    pub media: &'a MediaCosts,
    pub pass_through: &'a BTreeSet<String>,
}

/// The worst case of one request, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Everything sent upstream.
    pub input: u64,
    /// All choices of all prompts together.
    pub output: u64,
    /// The output limit of one choice, as sent upstream.
    pub per_choice: u64,
}

/// A request that cannot be bounded, with the field to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

pub(crate) fn refuse<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        field: field.into(),
        reason: reason.into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The prompt itself: `messages`, `prompt` or `input`.
    Prompt,
    Length,
    Choices,
    /// Ollama's `options` object.
    Options,
    /// Function tools (hosted tools cost more than their bytes, so they are refused).
    Tools,
    /// Forwarded as is; its bytes count as input.
    Harmless,
}

const LENGTH_FIELDS: [&str; 4] = [
    "max_tokens",
    "max_completion_tokens",
    "n_predict",
    "max_new_tokens",
];

/// Sampling and format options of OpenAI, vLLM, llama.cpp and Ollama that
/// cannot make a call produce more than its length limit, or read more than
/// the bytes it sends.
const SAMPLING: [&str; 34] = [
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
    "user",
    "logit_bias",
    "logprobs",
    "stream",
    "stream_options",
    "response_format",
    "top_k",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "repeat_penalty",
    "repeat_last_n",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
    "min_tokens",
    "ignore_eos",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "cache_prompt",
    "n_probs",
    "grammar",
    "json_schema",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
];

const CHAT_ONLY: [&str; 9] = [
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "reasoning_effort",
    "store",
    "metadata",
];

const COMPLETIONS_ONLY: [&str; 2] = ["suffix", "echo"];
const EMBEDDINGS_ONLY: [&str; 3] = ["encoding_format", "dimensions", "user"];

/// Keys of Ollama's `options` that are not length fields and cannot raise cost.
const OLLAMA_OPTIONS: [&str; 19] = [
    "num_ctx",
    "num_keep",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "seed",
    "stop",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
    "penalize_newline",
    "num_predict",
];

/// Fields of the Responses API that cannot raise a call's cost beyond
/// their bytes. `previous_response_id` never gets here: the gateway expands
/// it into `input` first, so the chained history is bounded too.
const RESPONSES: [&str; 17] = [
    "instructions",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "store",
    "metadata",
    "user",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
    "include",
    "top_logprobs",
    "safety_identifier",
    "prompt_cache_key",
];

/// Fields of Anthropic's Messages API that cannot raise a call's cost beyond
/// their bytes (`thinking` spends within `max_tokens`).
const MESSAGES: [&str; 9] = [
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tool_choice",
    "thinking",
];

fn role(kind: Kind, field: &str) -> Option<Role> {
    if field == kind.prompt_field() {
        return Some(Role::Prompt);
    }
    if field == "model" {
        return Some(Role::Harmless);
    }
    match kind {
        Kind::Responses | Kind::Messages => {
            let (length, own): (&str, &[&str]) = if kind == Kind::Responses {
                ("max_output_tokens", &RESPONSES)
            } else {
                ("max_tokens", &MESSAGES)
            };
            return if field == length {
                Some(Role::Length)
            } else if field == "tools" {
                Some(Role::Tools)
            } else {
                own.contains(&field).then_some(Role::Harmless)
            };
        }
        _ => {}
    }
    if kind == Kind::Embeddings {
        return EMBEDDINGS_ONLY.contains(&field).then_some(Role::Harmless);
    }
    if LENGTH_FIELDS.contains(&field) {
        return Some(Role::Length);
    }
    if field == "n" || field == "best_of" {
        return Some(Role::Choices);
    }
    if field == "options" {
        return Some(Role::Options);
    }
    let own: &[&str] = match kind {
        Kind::Chat => &CHAT_ONLY,
        _ => &COMPLETIONS_ONLY,
    };
    (SAMPLING.contains(&field) || own.contains(&field)).then_some(Role::Harmless)
}

/// Bytes of `v` as JSON, without building the string.
pub fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A length field's value: `Ok(None)` means "no limit" (llama.cpp and Ollama
/// take -1 and -2 that way).
fn length_value(field: &str, v: &Value, unlimited_below_one: bool) -> Result<Option<u64>, Refused> {
    if v.is_null() {
        return Ok(None);
    }
    match v.as_i64() {
        Some(n) if n >= 1 => Ok(Some(n as u64)),
        Some(_) if unlimited_below_one => Ok(None),
        _ => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => refuse(field, "must be a positive integer"),
        },
    }
}

fn count_value(field: &str, v: &Value, most: u64) -> Result<u64, Refused> {
    if v.is_null() {
        return Ok(1);
    }
    match v.as_u64() {
        Some(n) if (1..=most).contains(&n) => Ok(n),
        _ => refuse(field, format!("must be an integer from 1 to {most}")),
    }
}

/// Tokens of one chat message's `content`.
pub(crate) fn content_tokens(
    path: &str,
    content: &Value,
    media: &MediaCosts,
) -> Result<u64, Refused> {
    match content {
        Value::Null => Ok(0),
        Value::String(s) => Ok(s.len() as u64),
        Value::Array(parts) => {
            let mut total = 0u64;
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{path}[{j}]");
                let Some(obj) = part.as_object() else {
                    return refuse(at, "must be a content part object");
                };
                let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
                let declared = |what: &str, cost: Option<u32>| {
                    match cost {
                    Some(t) => Ok(u64::from(t)),
                    None => refuse(
                        format!("{at}.type"),
                        format!(
                            "is `{ty}`: this model declares no cost for {what} parts, so the gateway cannot bound what it costs; an admin can set `media.{what}` on the model"
                        ),
                    ),
                }
                };
                total += match ty {
                    "text" | "refusal" => json_len(part),
                    "image_url" | "image" => declared("image", media.image)?,
                    "input_audio" | "audio" => declared("audio", media.audio)?,
                    "file" => declared("file", media.file)?,
                    _ => {
                        return refuse(
                            format!("{at}.type"),
                            format!("`{ty}` is not a content part type this gateway can bound"),
                        )
                    }
                };
            }
            Ok(total)
        }
        _ => refuse(path, "must be a string or an array of content parts"),
    }
}

fn chat_input(messages: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    let Some(list) = messages.as_array().filter(|m| !m.is_empty()) else {
        return refuse("messages", "is missing or is not a non-empty array");
    };
    let mut total = 0u64;
    for (i, m) in list.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return refuse(format!("messages[{i}]"), "must be an object");
        };
        total += PER_MESSAGE;
        for (k, v) in obj {
            total += match k.as_str() {
                "content" => content_tokens(&format!("messages[{i}].content"), v, media)?,
                // A reference to earlier audio output: audio again.
                "audio" if !v.is_null() => match media.audio {
                    Some(t) => u64::from(t),
                    None => return refuse(
                        format!("messages[{i}].audio"),
                        "refers to audio, and this model declares no cost for audio; an admin can set `media.audio` on the model",
                    ),
                },
                _ => k.len() as u64 + json_len(v),
            };
        }
    }
    Ok(total)
}

/// `prompt` / `input`: a string, strings, token ids, or lists of token ids.
/// Returns (tokens, how many separate prompts).
fn text_input(field: &str, v: &Value) -> Result<(u64, u64), Refused> {
    let tokens_of = |item: &Value, at: &str| -> Result<u64, Refused> {
        match item {
            Value::String(s) => Ok(s.len() as u64 + PER_MESSAGE),
            Value::Array(ids) if ids.iter().all(Value::is_u64) => {
                Ok(ids.len() as u64 + PER_MESSAGE)
            }
            _ => refuse(at, "must be text or a list of token ids"),
        }
    };
    match v {
        Value::String(_) => Ok((tokens_of(v, field)?, 1)),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            Ok((tokens_of(v, field)?, 1))
        }
        Value::Array(items) if !items.is_empty() => {
            let mut total = 0;
            for (i, item) in items.iter().enumerate() {
                total += tokens_of(item, &format!("{field}[{i}]"))?;
            }
            Ok((total, items.len() as u64))
        }
        _ => refuse(field, "is missing, empty, or not text"),
    }
}

fn options_length(opts: &Value, pass_through: &BTreeSet<String>) -> Result<Option<u64>, Refused> {
    let Some(map) = opts.as_object() else {
        return refuse("options", "must be an object");
    };
    for k in map.keys() {
        let dotted = format!("options.{k}");
        if !OLLAMA_OPTIONS.contains(&k.as_str()) && !pass_through.contains(&dotted) {
            return refuse(dotted, not_forwarded());
        }
    }
    match map.get("num_predict") {
        Some(v) => length_value("options.num_predict", v, true),
        None => Ok(None),
    }
}

fn not_forwarded() -> &'static str {
    "is not a field this gateway forwards to this model, because it could change what the call costs; remove it, or ask an admin to list it under the model's `pass_through`"
}

/// What the fields of one request add up to, field by field.
#[derive(Default)]
struct Tally {
    /// The smallest length any length field asked for.
    asked: Option<u64>,
    choices: u64,
    prompts: u64,
    input: u64,
    /// Length fields given, to rewrite.
    lengths: Vec<String>,
    prompt_seen: bool,
}

impl Tally {
    fn ask(&mut self, n: Option<u64>) {
        if let Some(n) = n {
            self.asked = Some(self.asked.map_or(n, |a| a.min(n)));
        }
    }

    /// Counts one top-level field, or refuses it.
    fn field(
        &mut self,
        kind: Kind,
        k: &str,
        v: &Value,
        limits: &ModelLimits<'_>,
    ) -> Result<(), Refused> {
        let role = match role(kind, k) {
            Some(r) => r,
            None if limits.pass_through.contains(k) => Role::Harmless,
            None => return refuse(k, not_forwarded()),
        };
        let bytes = k.len() as u64 + json_len(v);
        match role {
            Role::Prompt if kind == Kind::Chat => self.input += chat_input(v, limits.media)?,
            Role::Prompt if kind == Kind::Responses => {
                self.input += super::bound_items::responses_input(v, limits.media)?;
            }
            Role::Prompt if kind == Kind::Messages => {
                self.input += super::bound_items::messages_input(v, limits.media)?;
            }
            Role::Tools => {
                super::bound_items::tools(kind, v)?;
                self.input += bytes;
                if kind == Kind::Messages && v.as_array().is_some_and(|t| !t.is_empty()) {
                    self.input += TOOL_PROMPT;
                }
            }
            Role::Prompt => {
                let (tokens, n) = text_input(k, v)?;
                self.input += tokens;
                self.prompts = n;
            }
            Role::Length => {
                let lenient = k == "n_predict" || k == "max_new_tokens";
                self.ask(length_value(k, v, lenient)?);
                self.lengths.push(k.to_string());
                self.input += bytes;
            }
            Role::Choices => {
                let most = if k == "n" { MAX_CHOICES } else { MAX_BEST_OF };
                self.choices = self.choices.max(count_value(k, v, most)?);
            }
            Role::Options => {
                self.ask(options_length(v, limits.pass_through)?);
                self.input += bytes;
            }
            Role::Harmless => self.input += bytes,
        }
        self.prompt_seen |= role == Role::Prompt;
        Ok(())
    }
}

/// Checks and bounds a request body in place: unknown fields are refused,
/// length fields are rewritten to the call's output limit (and `max_tokens`
/// is added when the call set none), and the worst case is returned.
pub fn bound(kind: Kind, body: &mut Value, limits: ModelLimits<'_>) -> Result<Bound, Refused> {
    let Some(map) = body.as_object_mut() else {
        return refuse("body", "must be a JSON object");
    };
    let mut t = Tally {
        choices: 1,
        prompts: 1,
        input: PER_MESSAGE,
        ..Tally::default()
    };
    for (k, v) in map.iter() {
        t.field(kind, k, v, &limits)?;
    }
    if !t.prompt_seen {
        return refuse(kind.prompt_field(), "is required");
    }
    if kind == Kind::Embeddings {
        return Ok(Bound {
            input: t.input,
            output: 0,
            per_choice: 0,
        });
    }
    let cap = limits
        .max_output_tokens
        .map_or(DEFAULT_MAX_OUTPUT_TOKENS, u64::from);
    let per_choice = t.asked.map_or(cap, |a| a.min(cap));
    write_lengths(kind, map, &t.lengths, per_choice);
    Ok(Bound {
        input: t.input,
        output: per_choice
            .saturating_mul(t.choices)
            .saturating_mul(t.prompts),
        per_choice,
    })
}

fn write_lengths(kind: Kind, map: &mut Map<String, Value>, given: &[String], per_choice: u64) {
    for k in given {
        map.insert(k.clone(), Value::from(per_choice));
    }
    if !map.contains_key(kind.length_field()) && !map.contains_key("max_completion_tokens") {
        map.insert(kind.length_field().into(), Value::from(per_choice));
    }
    if let Some(opts) = map.get_mut("options").and_then(Value::as_object_mut) {
        if opts.contains_key("num_predict") {
            opts.insert("num_predict".into(), Value::from(per_choice));
        }
    }
}

#[cfg(test)]
mod tests;
