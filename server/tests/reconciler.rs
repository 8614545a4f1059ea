//! The live reconciler in `tollgate serve`: editor save patterns, bad files,
//! two instances on one database, and health reporting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use app::domain::money::MICRO;
use app::ssr::owners::{create_client, OwnerKind};
use app::ssr::{now_ms, pools};
use common::*;
use sea_orm::DatabaseConnection;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for a change to be applied before calling it lost. A
/// generous bound on a condition, not a performance target.
const APPLY_LIMIT: Duration = Duration::from_secs(15);

fn config_with_max(max: i64) -> String {
    format!(
        "\
models:
  dummy: {{ provider: dummy, price: {{ input: 0, output: 0 }} }}
clients:
  default:
    max: 100.0
    model_access:
      default: blacklist
  research-bot:
    max: {max}.0
    starting: 500.0
    model_access:
      default: whitelist
"
    )
}

struct Setup {
    tdb: TestDb,
    cfg: PathBuf,
    db: DatabaseConnection,
    client_id: i64,
}

async fn setup(backend: Backend) -> Setup {
    let tdb = TestDb::new(backend).await;
    let cfg = tdb.dir.path().join("tollgate.yaml");
    write(&cfg, &config_with_max(500));
    init_db(&cfg, &tdb.url);
    let db = tdb.connect().await;
    let c = create_client(&db, &load(&cfg).config, "research-bot", None, now_ms())
        .await
        .unwrap();
    Setup {
        tdb,
        cfg,
        db,
        client_id: c.id,
    }
}

async fn pool_balance(s: &Setup) -> (i64, i64) {
    let p = pools::find(&s.db, OwnerKind::Client, s.client_id)
        .await
        .unwrap()
        .unwrap();
    (p.balance_micro, p.held_micro)
}

async fn pool_max(s: &Setup) -> i64 {
    pools::find(&s.db, OwnerKind::Client, s.client_id)
        .await
        .unwrap()
        .unwrap()
        .max_micro
}

async fn wait_pool_max(s: &Setup, server: &Server, want: i64, what: &str) {
    let start = Instant::now();
    loop {
        if pool_max(s).await == want * MICRO {
            return;
        }
        if start.elapsed() > APPLY_LIMIT {
            panic!(
                "{what} ({:?}): max {want} not applied within {APPLY_LIMIT:?}; log:\n{}",
                s.tdb.backend,
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn in_place_write(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

fn truncate_then_write(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.sync_all().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_file_name(".tollgate.yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn delete_then_recreate(path: &Path, text: &str) {
    std::fs::remove_file(path).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn every_editor_save_pattern_is_applied() {
    type Save = fn(&Path, &str);
    let patterns: [(&str, Save); 4] = [
        ("in-place write", in_place_write),
        ("truncate then write", truncate_then_write),
        ("temp file renamed over", rename_over),
        ("delete then recreate", delete_then_recreate),
    ];
    for backend in BACKENDS {
        let s = setup(backend).await;
        let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
        let mut max = 500;
        for (name, save) in patterns {
            max += 100;
            save(&s.cfg, &config_with_max(max));
            wait_pool_max(&s, &server, max, name).await;
            let h = server
                .wait_health(APPLY_LIMIT, |h| h["config"]["last_reload_ok"] == true)
                .await;
            assert!(h["config"]["last_error"].is_null(), "{h}");
        }
        // Two saves in quick succession: the second wins.
        std::fs::write(&s.cfg, config_with_max(901)).unwrap();
        std::fs::write(&s.cfg, config_with_max(902)).unwrap();
        wait_pool_max(&s, &server, 902, "two quick saves").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            pool_max(&s).await,
            902 * MICRO,
            "{backend:?}: the later save stays in force"
        );
    }
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_config() {
    let cases = [
        (
            "syntax error",
            "clients:\n  research-bot:\n    max: [700\n",
            ":3:",
        ),
        (
            "unknown field",
            "clients:\n  research-bot:\n    maxx: 700\n",
            "unknown field `maxx`",
        ),
        (
            "bad value",
            "clients:\n  research-bot:\n    max: -7\n",
            "clients.research-bot.max: max must be ≥ 0 or exactly -2",
        ),
    ];
    for backend in BACKENDS {
        let s = setup(backend).await;
        let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
        let (_, h) = server.health().await;
        let first_generation = h["config"]["generation"].as_i64().unwrap();
        for (i, (what, text, expected)) in cases.into_iter().enumerate() {
            let generation = first_generation + i as i64;
            let good = 500 + i as i64;
            std::fs::write(&s.cfg, text).unwrap();
            let h = server
                .wait_health(APPLY_LIMIT, |h| h["config"]["last_reload_ok"] == false)
                .await;
            let err = h["config"]["last_error"].as_str().unwrap().to_string();
            assert!(
                err.contains("tollgate.yaml:"),
                "{what}: error names the file: {err}"
            );
            assert!(err.contains(expected), "{what}: {err}");
            assert_eq!(
                h["config"]["generation"].as_i64().unwrap(),
                generation,
                "{what}: generation unchanged"
            );
            assert_eq!(
                pool_max(&s).await,
                good * MICRO,
                "{what} ({backend:?}): old values stay in force"
            );
            let row = app::ssr::config_state::get(&s.db).await.unwrap().unwrap();
            assert!(
                !row.last_reload_ok && row.last_error.as_deref() == Some(err.as_str()),
                "{what}: recorded in config_state"
            );
            assert!(server.log().contains(expected), "{what}: logged");

            // A good file is applied again.
            std::fs::write(&s.cfg, config_with_max(good + 1)).unwrap();
            wait_pool_max(&s, &server, good + 1, what).await;
            let h = server
                .wait_health(APPLY_LIMIT, |h| h["config"]["last_reload_ok"] == true)
                .await;
            assert_eq!(h["config"]["generation"].as_i64().unwrap(), generation + 1);
        }
    }
}

#[tokio::test]
async fn two_instances_on_one_postgres_reconcile_safely() {
    let s = setup(Backend::Postgres).await;
    let a = Server::spawn(&s.cfg, &s.tdb.url, &[]);
    let b = Server::spawn(&s.cfg, &s.tdb.url, &[]);
    let before = app::ssr::config_state::get(&s.db)
        .await
        .unwrap()
        .unwrap()
        .generation;
    for max in [610, 620, 630] {
        rename_over(&s.cfg, &config_with_max(max));
        wait_pool_max(&s, &a, max, "two instances").await;
        for server in [&a, &b] {
            server
                .wait_health(APPLY_LIMIT, |h| {
                    h["config"]["generation"].as_i64() == Some(before + (max - 600) / 10)
                })
                .await;
        }
    }
    let row = app::ssr::config_state::get(&s.db).await.unwrap().unwrap();
    assert_eq!(
        row.generation,
        before + 3,
        "one generation per distinct content, not per instance"
    );
    let pool = pools::find(&s.db, OwnerKind::Client, s.client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pool.max_micro, pool.balance_micro),
        (630 * MICRO, 500 * MICRO)
    );
    assert_eq!(a.health().await.0, 200);
}

#[tokio::test]
async fn health_reports_config_and_answers_503_without_a_database() {
    let s = setup(Backend::Postgres).await;
    let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
    let (status, h) = server.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert!(h["config"]["generation"].as_i64().unwrap() >= 1);
    assert!(h["config"]["applied_at"].as_str().unwrap().ends_with('Z'));
    s.db.clone().close().await.unwrap();
    s.tdb.drop_postgres_now();
    let (status, h) = server.health().await;
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["database"], "unreachable");
}

#[tokio::test]
async fn the_first_page_renders_on_the_server() {
    let s = setup(Backend::Sqlite).await;
    let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
    let html = reqwest::get(format!("{}/", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<h1>Tollgate</h1>"), "{html}");
    assert!(
        html.contains("/pkg/tollgate.js"),
        "hydration script is linked"
    );
    let missing = reqwest::get(format!("{}/no-such-page", server.url))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(missing.text().await.unwrap().contains("Page not found"));
}

/// The file as an editor might leave it for a moment: a valid prefix cut
/// before `clients:`, and a file of comments only. Each blocks every client
/// (a missing entry means max 0), which must cost nobody any coins.
const CUT_BEFORE_CLIENTS: &str =
    "models:\n  dummy: { provider: dummy, price: { input: 0, output: 0 } }\n";
const COMMENTS_ONLY: &str = "# tollgate.yaml\n# (being edited)\n";

#[tokio::test]
async fn no_config_change_destroys_coins() {
    for backend in BACKENDS {
        let s = setup(backend).await;
        let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
        assert_eq!(pool_balance(&s).await, (500 * MICRO, 0));
        for (what, text) in [
            ("a save cut before clients:", CUT_BEFORE_CLIENTS),
            ("a comments-only save", COMMENTS_ONLY),
        ] {
            std::fs::write(&s.cfg, text).unwrap();
            wait_pool_max(&s, &server, 0, what).await;
            assert_eq!(
                pool_balance(&s).await,
                (0, 500 * MICRO),
                "{what} ({backend:?}): blocked, and every coin held back"
            );
            std::fs::write(&s.cfg, config_with_max(500)).unwrap();
            wait_pool_max(&s, &server, 500, what).await;
            assert_eq!(
                pool_balance(&s).await,
                (500 * MICRO, 0),
                "{what} ({backend:?}): restoring the file restores the coins"
            );
        }
        // Lowering max limits what can be spent; raising it gives coins back.
        std::fs::write(&s.cfg, config_with_max(100)).unwrap();
        wait_pool_max(&s, &server, 100, "lowered").await;
        assert_eq!(pool_balance(&s).await, (100 * MICRO, 400 * MICRO));
        let key = app::ssr::keys::create(
            &s.db,
            OwnerKind::Client,
            s.client_id,
            "t",
            None,
            None,
            now_ms(),
        )
        .await
        .unwrap();
        let bal: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/v1/balance", server.url))
            .bearer_auth(&key.secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (bal["balance"].as_f64(), bal["stored"].as_f64()),
            (Some(100.0), Some(500.0)),
            "{bal}"
        );
        std::fs::write(&s.cfg, config_with_max(500)).unwrap();
        wait_pool_max(&s, &server, 500, "raised again").await;
        assert_eq!(pool_balance(&s).await, (500 * MICRO, 0), "{backend:?}");

        // The last applied change is kept for /config, as the plan prints it.
        let row = app::ssr::config_state::get(&s.db).await.unwrap().unwrap();
        let plan = row.last_plan.unwrap_or_default();
        assert!(
            plan.contains("~ coins available: 100 (400 held back) -> 500"),
            "{plan}"
        );
    }
}

#[tokio::test]
async fn check_config_plan_shows_what_a_file_would_change() {
    for backend in BACKENDS {
        let s = setup(backend).await;
        let next = s.tdb.dir.path().join("next.yaml");
        write(&next, CUT_BEFORE_CLIENTS);
        let out = tollgate(&["check-config", "--plan"], &next, &s.tdb.url);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in [
            "client research-bot:",
            "~ settings from: named -> default",
            "~ coins available: 500 -> 0 (500 held back)",
            "~ max: 500 -> 0 (blocked)",
            "~ model dummy: allowed (not listed; model_access.default is whitelist) -> denied",
            "Plan: 1 of 1 clients and users change.",
        ] {
            assert!(
                text.contains(line),
                "{backend:?}: `{line}` missing from:\n{text}"
            );
        }
        assert_eq!(
            pool_balance(&s).await,
            (500 * MICRO, 0),
            "a plan changes nothing"
        );
        let same = tollgate(&["check-config", "--plan"], &s.cfg, &s.tdb.url);
        assert!(
            String::from_utf8_lossy(&same.stdout).contains("Plan: 0 of 1"),
            "{same:?}"
        );
    }
}

#[tokio::test]
async fn an_unreadable_config_path_is_reported_and_never_blocks() {
    let s = setup(Backend::Sqlite).await;
    let server = Server::spawn(&s.cfg, &s.tdb.url, &[]);
    type Break = fn(&Path);
    let cases: [(&str, Break); 2] = [
        ("a directory", |p| std::fs::create_dir(p).unwrap()),
        ("a FIFO", |p| {
            let ok = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(ok.success());
        }),
    ];
    for (i, (what, make)) in cases.into_iter().enumerate() {
        std::fs::remove_file(&s.cfg).unwrap();
        make(&s.cfg);
        let h = server
            .wait_health(APPLY_LIMIT, |h| h["config"]["last_reload_ok"] == false)
            .await;
        let err = h["config"]["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("cannot read the config file"), "{what}: {err}");
        // Still serving, and a regular file in its place is applied.
        if s.cfg.is_dir() {
            std::fs::remove_dir(&s.cfg).unwrap();
        } else {
            std::fs::remove_file(&s.cfg).unwrap();
        }
        let max = 700 + i as i64;
        std::fs::write(&s.cfg, config_with_max(max)).unwrap();
        wait_pool_max(&s, &server, max, what).await;
        server
            .wait_health(APPLY_LIMIT, |h| h["config"]["last_reload_ok"] == true)
            .await;
    }
}
