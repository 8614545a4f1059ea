//! The live reconciler in `tollgate serve`: editor save patterns, bad files,
//! two instances on one database, and health reporting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::money::MICRO;
use common::*;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::Duration;

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

/// research-bot with 500 of 500 coins; the server is started by the caller.
async fn setup(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .config(&config_with_max(500))
        .clients(&["research-bot"])
        .build()
        .await
}

/// The research-bot pool's (balance, held back), in micro-coins.
async fn pool_balance(app: &TestApp) -> (i64, i64) {
    let p = app.pool("research-bot").await;
    (p.balance_micro, p.held_micro)
}

async fn pool_max(app: &TestApp) -> i64 {
    app.pool("research-bot").await.max_micro
}

/// Waits until the research-bot pool's max is `want` coins: the change was applied.
async fn wait_pool_max(app: &TestApp, want: i64, what: &str) {
    app.wait_for(
        &format!("{what} ({:?}): max {want} applied", app.backend),
        || async move { (pool_max(app).await == want * MICRO).then_some(()) },
    )
    .await;
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

async fn save_patterns_story(backend: Backend) {
    type Save = fn(&Path, &str);
    let patterns: [(&str, Save); 4] = [
        ("in-place write", in_place_write),
        ("truncate then write", truncate_then_write),
        ("temp file renamed over", rename_over),
        ("delete then recreate", delete_then_recreate),
    ];
    let mut s = setup(backend).await;
    s.start();
    let mut max = 500;
    for (name, save) in patterns {
        max += 100;
        save(&s.config, &config_with_max(max));
        wait_pool_max(&s, max, name).await;
        let h = s
            .wait_health(|h| h["config"]["last_reload_ok"] == true)
            .await;
        assert!(h["config"]["last_error"].is_null(), "{h}");
    }
    // Two saves in quick succession: the second wins.
    std::fs::write(&s.config, config_with_max(901)).unwrap();
    std::fs::write(&s.config, config_with_max(902)).unwrap();
    wait_pool_max(&s, 902, "two quick saves").await;
    // Nothing to wait for here: the point is that nothing happens. A short
    // window in which a late read of the first save would be applied.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        pool_max(&s).await,
        902 * MICRO,
        "{backend:?}: the later save stays in force"
    );
}
on_backends!(every_editor_save_pattern_is_applied, save_patterns_story);

async fn bad_file_story(backend: Backend) {
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
    let mut s = setup(backend).await;
    s.start();
    let (_, h) = s.health().await;
    let first_generation = h["config"]["generation"].as_i64().unwrap();
    for (i, (what, text, expected)) in cases.into_iter().enumerate() {
        let generation = first_generation + i as i64;
        let good = 500 + i as i64;
        s.write_config(text);
        let h = s
            .wait_health(|h| h["config"]["last_reload_ok"] == false)
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
        assert!(s.log().contains(expected), "{what}: logged");

        // A good file is applied again.
        s.write_config(&config_with_max(good + 1));
        wait_pool_max(&s, good + 1, what).await;
        let h = s
            .wait_health(|h| h["config"]["last_reload_ok"] == true)
            .await;
        assert_eq!(h["config"]["generation"].as_i64().unwrap(), generation + 1);
    }
}
on_backends!(a_bad_file_keeps_the_last_good_config, bad_file_story);

async fn two_instances_story(backend: Backend) {
    let mut s = setup(backend).await;
    s.start();
    let b = s.spawn_instance();
    let before = app::ssr::config_state::get(&s.db)
        .await
        .unwrap()
        .unwrap()
        .generation;
    for max in [610, 620, 630] {
        rename_over(&s.config, &config_with_max(max));
        wait_pool_max(&s, max, "two instances").await;
        for server in [s.server(), &b] {
            server
                .wait_health(WAIT_LIMIT, |h| {
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
    let pool = s.pool("research-bot").await;
    assert_eq!(
        (pool.max_micro, pool.balance_micro),
        (630 * MICRO, 500 * MICRO)
    );
    assert_eq!(s.health().await.0, 200);
}
on_backends!(
    two_instances_on_one_database_reconcile_safely,
    two_instances_story,
    postgres
);

/// Dropping the database under a running server is done on PostgreSQL.
async fn health_without_database_story(backend: Backend) {
    let mut s = setup(backend).await;
    s.start();
    let (status, h) = s.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert!(h["config"]["generation"].as_i64().unwrap() >= 1);
    assert!(h["config"]["applied_at"].as_str().unwrap().ends_with('Z'));
    s.db.clone().close().await.unwrap();
    s.tdb.drop_postgres_now();
    let (status, h) = s.health().await;
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["database"], "unreachable");
}
on_backends!(
    health_reports_config_and_answers_503_without_a_database,
    health_without_database_story,
    postgres
);

async fn first_page_story(backend: Backend) {
    let mut s = setup(backend).await;
    s.start();
    let html = reqwest::get(format!("{}/", s.url()))
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
    let missing = reqwest::get(format!("{}/no-such-page", s.url()))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(missing.text().await.unwrap().contains("Page not found"));
}
on_backends!(
    the_first_page_renders_on_the_server,
    first_page_story,
    sqlite
);

/// The file as an editor might leave it for a moment: a valid prefix cut
/// before `clients:`, and a file of comments only. Each blocks every client
/// (a missing entry means max 0), which must cost nobody any coins.
const CUT_BEFORE_CLIENTS: &str =
    "models:\n  dummy: { provider: dummy, price: { input: 0, output: 0 } }\n";
const COMMENTS_ONLY: &str = "# tollgate.yaml\n# (being edited)\n";

async fn no_coins_destroyed_story(backend: Backend) {
    let mut s = setup(backend).await;
    s.start();
    assert_eq!(pool_balance(&s).await, (500 * MICRO, 0));
    for (what, text) in [
        ("a save cut before clients:", CUT_BEFORE_CLIENTS),
        ("a comments-only save", COMMENTS_ONLY),
    ] {
        s.write_config(text);
        wait_pool_max(&s, 0, what).await;
        assert_eq!(
            pool_balance(&s).await,
            (0, 500 * MICRO),
            "{what} ({backend:?}): blocked, and every coin held back"
        );
        s.write_config(&config_with_max(500));
        wait_pool_max(&s, 500, what).await;
        assert_eq!(
            pool_balance(&s).await,
            (500 * MICRO, 0),
            "{what} ({backend:?}): restoring the file restores the coins"
        );
    }
    // Lowering max limits what can be spent; raising it gives coins back.
    s.write_config(&config_with_max(100));
    wait_pool_max(&s, 100, "lowered").await;
    assert_eq!(pool_balance(&s).await, (100 * MICRO, 400 * MICRO));
    let key = s.create_key("research-bot").await;
    let (_, bal) = s.get(&key, "/v1/balance").await;
    assert_eq!(
        (bal["balance"].as_f64(), bal["stored"].as_f64()),
        (Some(100.0), Some(500.0)),
        "{bal}"
    );
    s.write_config(&config_with_max(500));
    wait_pool_max(&s, 500, "raised again").await;
    assert_eq!(pool_balance(&s).await, (500 * MICRO, 0), "{backend:?}");

    // The last applied change is kept for /config, as the plan prints it.
    let row = app::ssr::config_state::get(&s.db).await.unwrap().unwrap();
    let plan = row.last_plan.unwrap_or_default();
    assert!(
        plan.contains("~ coins available: 100 (400 held back) -> 500"),
        "{plan}"
    );
}
on_backends!(no_config_change_destroys_coins, no_coins_destroyed_story);

async fn check_config_plan_story(backend: Backend) {
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
    let same = s.tollgate(&["check-config", "--plan"]);
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("Plan: 0 of 1"),
        "{same:?}"
    );
}
on_backends!(
    check_config_plan_shows_what_a_file_would_change,
    check_config_plan_story
);

/// Config-file handling, independent of the database; run on SQLite.
async fn unreadable_path_story(backend: Backend) {
    let mut s = setup(backend).await;
    s.start();
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
        std::fs::remove_file(&s.config).unwrap();
        make(&s.config);
        let h = s
            .wait_health(|h| h["config"]["last_reload_ok"] == false)
            .await;
        let err = h["config"]["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("cannot read the config file"), "{what}: {err}");
        // Still serving, and a regular file in its place is applied.
        if s.config.is_dir() {
            std::fs::remove_dir(&s.config).unwrap();
        } else {
            std::fs::remove_file(&s.config).unwrap();
        }
        let max = 700 + i as i64;
        s.write_config(&config_with_max(max));
        wait_pool_max(&s, max, what).await;
        s.wait_health(|h| h["config"]["last_reload_ok"] == true)
            .await;
    }
}
on_backends!(
    an_unreadable_config_path_is_reported_and_never_blocks,
    unreadable_path_story,
    sqlite
);
