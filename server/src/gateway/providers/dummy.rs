//! The built-in `dummy` model: deterministic, no network, and it reports
//! usage exactly as an OpenAI-compatible server does. One token is one
//! whitespace-separated word.

use super::{Chunk, ChunkStream, Kind, Reply, Usage};
use serde_json::{json, Value};

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Text of a message `content`: a string, or an array of `{type:"text",text}` parts.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn prompt_text(kind: Kind, body: &Value) -> Vec<String> {
    match kind {
        Kind::Chat => body["messages"]
            .as_array()
            .map(|ms| ms.iter().map(|m| content_text(&m["content"])).collect())
            .unwrap_or_default(),
        Kind::Completions => string_or_list(&body["prompt"]),
        Kind::Embeddings => string_or_list(&body["input"]),
        // The gateway translates these to chat before they reach the dummy.
        Kind::Responses | Kind::Messages => Vec::new(),
    }
}

/// `"text"` or `["text", …]`, as OpenAI accepts for `prompt` and `input`.
fn string_or_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        v => vec![v.as_str().unwrap_or_default().to_string()],
    }
}

/// The reply's words: an echo of the last prompt, cut to `max_tokens`.
fn reply_words(prompts: &[String], max_tokens: u64) -> (Vec<String>, &'static str) {
    let last = prompts.last().cloned().unwrap_or_default();
    let mut out: Vec<String> = vec!["Dummy".into(), "reply:".into()];
    out.extend(last.split_whitespace().map(str::to_string));
    if out.len() as u64 > max_tokens {
        out.truncate(max_tokens as usize);
        (out, "length")
    } else {
        (out, "stop")
    }
}

fn embedding(text: &str) -> Vec<f64> {
    // FNV-1a seed, then xorshift: deterministic and dependency-free.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..16)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h % 2001) as f64 / 1000.0 - 1.0
        })
        .collect()
}

pub fn call(
    kind: Kind,
    body: &Value,
    model: &str,
    id: &str,
    max_tokens: u64,
    stream: bool,
    include_usage: bool,
) -> Reply {
    let prompts = prompt_text(kind, body);
    if kind == Kind::Embeddings {
        return embeddings(&prompts, model);
    }
    let prompt_tokens: u64 = prompts.iter().map(|p| words(p)).sum::<u64>()
        + if kind == Kind::Chat {
            3 * prompts.len() as u64
        } else {
            0
        };
    let (reply, finish) = reply_words(&prompts, max_tokens);
    let usage = Usage {
        input: prompt_tokens,
        output: reply.len() as u64,
        ..Usage::default()
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let head = Head {
        kind,
        id,
        model,
        created,
    };
    if stream {
        Reply::Stream(stream_reply(&head, reply, finish, usage, include_usage))
    } else {
        completion_reply(&head, &reply, finish, usage)
    }
}

/// One vector per input.
fn embeddings(prompts: &[String], model: &str) -> Reply {
    let data: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"object": "embedding", "index": i, "embedding": embedding(p)}))
        .collect();
    let usage = Usage {
        input: prompts.iter().map(|p| words(p)).sum(),
        ..Usage::default()
    };
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input}
    });
    Reply::Json { body, usage }
}

/// What every completion body and chunk names.
struct Head<'a> {
    kind: Kind,
    id: &'a str,
    model: &'a str,
    created: u64,
}

impl Head<'_> {
    /// A body (or a chunk, when `chunk`) with these choices.
    fn body(&self, chunk: bool, choices: Value) -> Value {
        let object = match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            _ => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.input, "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output
    })
}

fn completion_reply(head: &Head<'_>, reply: &[String], finish: &str, usage: Usage) -> Reply {
    let text = reply.join(" ");
    let choice = match head.kind {
        Kind::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
        }
        _ => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
    };
    let mut body = head.body(false, json!([choice]));
    body["usage"] = usage_json(usage);
    Reply::Json { body, usage }
}

/// The reply a word a chunk, then the finish, then usage (shown to the
/// client only when it asked for it).
fn stream_reply(
    head: &Head<'_>,
    reply: Vec<String>,
    finish: &str,
    usage: Usage,
    include_usage: bool,
) -> ChunkStream {
    let chunk = |choices: Value, tokens: u64| Chunk {
        event: None,
        data: head.body(true, choices).to_string(),
        usage: None,
        tokens,
        forward: true,
    };
    let mut chunks = Vec::new();
    if head.kind == Kind::Chat {
        chunks.push(chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            0,
        ));
    }
    let n = reply.len();
    for (i, w) in reply.into_iter().enumerate() {
        let piece = if i + 1 < n { format!("{w} ") } else { w };
        let choice = match head.kind {
            Kind::Chat => json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
            _ => json!([{"index": 0, "text": piece, "logprobs": null, "finish_reason": null}]),
        };
        chunks.push(chunk(choice, 1));
    }
    let last = match head.kind {
        Kind::Chat => json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        _ => json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": finish}]),
    };
    chunks.push(chunk(last, 0));
    let mut data = head.body(true, json!([]));
    data["usage"] = usage_json(usage);
    chunks.push(Chunk {
        event: None,
        data: data.to_string(),
        usage: Some(usage),
        tokens: 0,
        forward: include_usage,
    });
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}
