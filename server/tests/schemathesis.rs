//! The OpenAPI document against the running gateway: schemathesis (from
//! PyPI, in the virtualenv `scripts/setup.sh --test` makes) generates
//! requests for every documented operation, valid and invalid, with a
//! valid key, and checks every response: no 5xx, and nothing the document
//! does not describe.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The virtualenv's Python, which has schemathesis; it runs the CLI through
/// `schemathesis_cli.py` (a workaround for a CPython 3.11 bug, see there).
fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../end2end/.venv-sdk/bin/python");
    let cli = p.with_file_name("schemathesis");
    assert!(
        cli.exists(),
        "{} is missing: run ./scripts/setup.sh --test (it installs schemathesis)",
        cli.display()
    );
    p
}

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0.001, output: 0.002 }, max_output_tokens: 64 }
clients:
  default:
    max: 1000000
    starting: 1000000
    model_access: { default: whitelist }
";

async fn the_document_holds_against_the_gateway(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["fuzzer"])
        .keys(&["fuzzer"])
        .spawn()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis_cli.py");
    let out = Command::new(python())
        .arg(cli)
        .arg("run")
        .arg(format!("{}/openapi.json", app.url()))
        .args(["--checks", "all"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", app.keys["fuzzer"]),
        ])
        // Examples, coverage (boundaries and every documented constraint,
        // kept and violated) and fuzzing, a bounded number of cases per
        // operation: about a minute on two cores. Not stateful: the
        // document has no links to follow.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "150"])
        .args(["--workers", "2"])
        .args(["--seed", "1"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .arg("--no-color")
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        app.log()
    );
    // Every documented operation was exercised.
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (selected, tested) = (field("Selected:"), field("Tested:"));
    let cases = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .unwrap_or_default()
        .trim();
    eprintln!(
        "schemathesis: operations selected {selected}, tested {tested}; test cases {cases}; {}",
        stdout.lines().last().unwrap_or_default()
    );
    let total = selected.split('/').nth(1).unwrap_or_default();
    assert!(
        selected == format!("{tested}/{tested}")
            && total == tested
            && tested.parse::<u32>().unwrap_or(0) >= 12,
        "not every operation was tested: {selected}, {tested}\n{stdout}"
    );
}

on_backends!(
    the_document_holds_against_the_gateway,
    the_document_holds_against_the_gateway,
    sqlite
);
