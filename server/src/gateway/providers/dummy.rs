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
    let prompt_tokens: u64 = prompts.iter().map(|p| words(p)).sum::<u64>()
        + if kind == Kind::Chat {
            3 * prompts.len() as u64
        } else {
            0
        };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    if kind == Kind::Embeddings {
        let data: Vec<Value> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"object": "embedding", "index": i, "embedding": embedding(p)}))
            .collect();
        let usage = Usage {
            prompt: prompts.iter().map(|p| words(p)).sum(),
            completion: 0,
        };
        let body = json!({
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": usage.prompt, "total_tokens": usage.prompt}
        });
        return Reply::Json { body, usage };
    }

    let (reply, finish) = reply_words(&prompts, max_tokens);
    let usage = Usage {
        prompt: prompt_tokens,
        completion: reply.len() as u64,
    };
    let usage_json = json!({
        "prompt_tokens": usage.prompt, "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion
    });
    let (object, chunk_object) = match kind {
        Kind::Chat => ("chat.completion", "chat.completion.chunk"),
        _ => ("text_completion", "text_completion"),
    };

    if !stream {
        let text = reply.join(" ");
        let choice = match kind {
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            _ => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        let body = json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice], "usage": usage_json
        });
        return Reply::Json { body, usage };
    }

    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut v = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u.clone();
        }
        v.to_string()
    };
    let mut chunks = Vec::new();
    if kind == Kind::Chat {
        chunks.push(Chunk {
            data: chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), None),
            usage: None,
            tokens: 0,
            forward: true,
        });
    }
    let n = reply.len();
    for (i, w) in reply.into_iter().enumerate() {
        let piece = if i + 1 < n { format!("{w} ") } else { w };
        let choice = match kind {
            Kind::Chat => json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
            _ => json!([{"index": 0, "text": piece, "logprobs": null, "finish_reason": null}]),
        };
        chunks.push(Chunk {
            data: chunk(choice, None),
            usage: None,
            tokens: 1,
            forward: true,
        });
    }
    let last = match kind {
        Kind::Chat => json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        _ => json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": finish}]),
    };
    chunks.push(Chunk {
        data: chunk(last, None),
        usage: None,
        tokens: 0,
        forward: true,
    });
    chunks.push(Chunk {
        data: chunk(json!([]), Some(&usage_json)),
        usage: Some(usage),
        tokens: 0,
        forward: include_usage,
    });
    let s: ChunkStream = Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
    Reply::Stream(s)
}
