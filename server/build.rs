//! With the `embed-site` feature, checks that the browser bundle the binary
//! embeds (`src/site.rs`) has been built, and is no older than its gzip
//! copies, before `include_bytes!` would fail with a bare "No such file".
//!
//! With `TOLLGATE_WAIT_FOR_BUNDLE=SECONDS` (set by `scripts/run.sh` on a
//! first build only, when the bundle is made in parallel with the server's
//! dependencies), it first waits up to that long for `scripts/bundle.sh` to
//! finish (its `target/site-gz/.complete` marker). The server crate itself
//! compiles only after this script has run, so it embeds the finished bundle.
// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::SystemTime;

const FILES: [&str; 3] = ["tollgate.js", "tollgate.wasm", "tollgate.css"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_EMBED_SITE").is_none() {
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    wait_for_bundle(&root.join("target/site-gz/.complete"));
    for name in FILES {
        let plain = root.join("target/site/pkg").join(name);
        let gzip = root.join(format!("target/site-gz/{name}.gz"));
        println!("cargo::rerun-if-changed={}", plain.display());
        println!("cargo::rerun-if-changed={}", gzip.display());
        match (modified(&plain), modified(&gzip)) {
            (Some(p), Some(g)) if g >= p => {}
            (None, _) | (_, None) => fail(&format!(
                "the `embed-site` feature embeds the browser bundle, but {} is missing",
                if modified(&plain).is_none() {
                    plain
                } else {
                    gzip
                }
                .display()
            )),
            _ => fail(&format!(
                "{} is older than {}: the bundle was rebuilt without its gzip copies",
                gzip.display(),
                plain.display()
            )),
        }
    }
}

fn wait_for_bundle(marker: &Path) {
    let Some(secs) = std::env::var("TOLLGATE_WAIT_FOR_BUNDLE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn fail(message: &str) {
    println!("cargo::error={message}; build it first with scripts/bundle.sh (--release for a release binary)");
}
