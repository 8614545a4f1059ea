//! Server-sent events from an upstream, split into events. Shared by every
//! provider that streams: OpenAI-style `data:` lines ending in
//! `data: [DONE]`, and the named events (`event:` + `data:`) of the
//! Responses API and Anthropic's API.

use super::{classify, ProviderError};
use futures::{Stream, StreamExt};

/// One event: its `event:` name, if any, and its `data:` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// The events of an upstream's streamed reply, until `data: [DONE]` or the
/// end of the body. Comments and keep-alives are skipped.
pub fn events(
    resp: reqwest::Response,
    url: String,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
    let state = (resp.bytes_stream(), Vec::<u8>::new(), false);
    futures::stream::unfold(state, move |(mut bytes, mut buf, mut done)| {
        let url = url.clone();
        async move {
            loop {
                if let Some(raw) = take_event(&mut buf) {
                    match read_event(&raw) {
                        None => continue,
                        Some(e) if e.data == "[DONE]" => {
                            done = true;
                            buf.clear();
                            continue;
                        }
                        Some(e) => return Some((Ok(e), (bytes, buf, done))),
                    }
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(classify(e, &url)), (bytes, buf, done)));
                    }
                    None => {
                        done = true;
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        buf.extend_from_slice(b"\n\n");
                    }
                }
            }
        }
    })
}

fn read_event(raw: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in raw.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        } else if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_string());
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event,
        data: data.join("\n"),
    })
}

/// Removes and returns the first complete SSE event from `buf`.
fn take_event(buf: &mut Vec<u8>) -> Option<String> {
    let text = match std::str::from_utf8(buf) {
        Ok(t) => t,
        // A multi-byte character cut by a chunk boundary: read up to it.
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).ok()?,
    };
    let (end, sep) = [("\r\n\r\n", 4), ("\n\n", 2)]
        .iter()
        .filter_map(|(s, n)| text.find(s).map(|i| (i, *n)))
        .min_by_key(|(i, _)| *i)?;
    let event = text[..end].to_string();
    buf.drain(..end + sep);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events() {
        let mut buf = b"data: {\"a\":1}\n\ndata: [DONE]\r\n\r\npartial".to_vec();
        assert_eq!(take_event(&mut buf).as_deref(), Some("data: {\"a\":1}"));
        assert_eq!(take_event(&mut buf).as_deref(), Some("data: [DONE]"));
        assert_eq!(take_event(&mut buf), None);
        assert_eq!(buf, b"partial");
    }

    #[test]
    fn reads_named_events() {
        let e = read_event("event: message_start\ndata: {\"type\":\"message_start\"}").unwrap();
        assert_eq!(e.event.as_deref(), Some("message_start"));
        assert_eq!(e.data, "{\"type\":\"message_start\"}");
        assert_eq!(read_event(": keep-alive"), None);
    }
}
