//! The browser bundle at `/pkg/tollgate.{js,wasm,css}`.
//!
//! With the `embed-site` feature (the release build of `scripts/run.sh`) the
//! binary carries the three files, and a gzip copy of each, and serves them
//! from memory: nothing beside the binary is read. Without it (a plain
//! `cargo build` or `cargo test`, `cargo leptos watch`) this adds no routes
//! and Leptos's file handler serves them from the site root on disk, as
//! before, so files on disk win in development. The rule is the feature,
//! never what happens to be on disk, so a release binary cannot pick up a
//! stale bundle from its working directory.
//!
//! The names are fixed (no content hash), so responses say `no-cache` with
//! an `ETag`: a browser revalidates each page load and gets `304` until the
//! binary changes.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One bundle file, as served.
pub struct Asset {
    /// The name under `/pkg/`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The same bytes gzipped at build time (`gzip -9`).
    pub gzip: &'static [u8],
}

#[cfg(feature = "embed-site")]
macro_rules! embed {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            // build.rs checks these exist and are fresh, with a clear message.
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/site/pkg/",
                $name
            )),
            gzip: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/site-gz/",
                $name,
                ".gz"
            )),
        }
    };
}

/// The embedded bundle: empty without the `embed-site` feature.
#[cfg(feature = "embed-site")]
pub static ASSETS: &[Asset] = &[
    embed!("tollgate.js", "text/javascript; charset=utf-8"),
    embed!("tollgate.wasm", "application/wasm"),
    embed!("tollgate.css", "text/css; charset=utf-8"),
];
#[cfg(not(feature = "embed-site"))]
pub static ASSETS: &[Asset] = &[];

/// Whether this binary serves the bundle from memory.
pub fn embedded() -> bool {
    !ASSETS.is_empty()
}

/// A route for each embedded file (none without the feature).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let tags = Tags::of(asset);
        router.route(
            &format!("/pkg/{}", asset.name),
            axum::routing::get(move |headers: HeaderMap| {
                std::future::ready(respond(asset, &tags, &headers))
            }),
        )
    })
}

/// The entity tags of the plain and the gzipped representation.
#[derive(Clone)]
struct Tags {
    plain: HeaderValue,
    gzip: HeaderValue,
}

impl Tags {
    fn of(asset: &Asset) -> Tags {
        let hash = fnv1a(asset.body);
        Tags {
            plain: HeaderValue::from_str(&format!("\"{hash:016x}\""))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
            gzip: HeaderValue::from_str(&format!("\"{hash:016x}-gz\""))
                .unwrap_or(HeaderValue::from_static("\"0-gz\"")),
        }
    }
}

fn respond(asset: &'static Asset, tags: &Tags, req: &HeaderMap) -> Response {
    let gzip = accepts_gzip(req);
    let tag = if gzip { &tags.gzip } else { &tags.plain };
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, tag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if matches(req, tag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        (headers, asset.gzip).into_response()
    } else {
        (headers, asset.body).into_response()
    }
}

/// `Accept-Encoding` lists `gzip` (or `*`) without `q=0`.
fn accepts_gzip(req: &HeaderMap) -> bool {
    req.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `If-None-Match` names this tag (weakly compared) or is `*`.
fn matches(req: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.to_str().unwrap_or("");
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

/// FNV-1a, 64 bits: stable across builds and platforms, so every instance
/// running the same binary gives the same tags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_is_chosen_unless_refused() {
        let cases = [
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("GZIP", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip;q=0.0, br", false),
            ("identity", false),
            ("", false),
        ];
        for (value, want) in cases {
            let h = headers(&[(header::ACCEPT_ENCODING, value)]);
            assert_eq!(accepts_gzip(&h), want, "{value:?}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    static ASSET: Asset = Asset {
        name: "x.css",
        content_type: "text/css; charset=utf-8",
        body: b"body { color: red }",
        gzip: b"(pretend gzip)",
    };

    #[test]
    fn a_matching_tag_gets_304_and_another_the_body() {
        let tags = Tags::of(&ASSET);
        let first = respond(&ASSET, &tags, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], ASSET.content_type);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(first.headers().get(header::CONTENT_ENCODING).is_none());
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_string();

        let again = headers(&[(header::IF_NONE_MATCH, &format!("\"other\", W/{tag}"))]);
        assert_eq!(
            respond(&ASSET, &tags, &again).status(),
            StatusCode::NOT_MODIFIED
        );
        // The gzipped representation has its own tag.
        let gz = headers(&[
            (header::IF_NONE_MATCH, tag.as_str()),
            (header::ACCEPT_ENCODING, "gzip"),
        ]);
        let zipped = respond(&ASSET, &tags, &gz);
        assert_eq!(zipped.status(), StatusCode::OK);
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_ne!(zipped.headers()[header::ETAG], tag.as_str());
    }

    #[test]
    fn tags_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
