//! Backup and restore with exactly the commands docs/deployment.md gives:
//! `sqlite3 … ".backup …"` / `".restore …"` for SQLite, `pg_dump -Fc` /
//! `pg_restore` for PostgreSQL. A backup taken while the server runs is
//! restored into a fresh database, and a server started on it has the same
//! balances and ledger, and takes the keys issued before.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::ssr::entities::{lease, ledger};
use common::*;
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 1, output: 2 } }
clients:
  default:
    max: 100
    refresh: 0
    starting: 100
    model_access: { default: whitelist }
";

on_backends!(a_restored_backup_has_the_balances_ledger_and_keys, story);

async fn story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["app"])
        .keys(&["app"])
        .spawn()
        .await;
    for _ in 0..3 {
        let (status, body, _) = app.chat("app", "dummy").await;
        assert_eq!(status, 200, "{body}");
    }
    app.wait_ledger_rows("app", 3).await;
    // An idle lease goes back to its pool within seconds; then the database
    // alone says what each pool holds.
    app.wait_for("the lease to go back", || async {
        let leases = lease::Entity::find().all(&app.db).await.unwrap();
        leases.is_empty().then_some(())
    })
    .await;
    let (status, balance) = app.get(&app.keys["app"], "/v1/balance").await;
    assert_eq!(status, 200, "{balance}");
    assert!(balance["balance"].as_f64().unwrap() < 100.0, "{balance}");
    let ledger = ledger_rows(&app.db).await;

    // Backed up while the server runs.
    let backup = app.tdb.dir.path().join("backup");
    back_up(backend, &app.tdb.url, &backup);
    let restored = TestDb::new(backend).await;
    restore(backend, &backup, &restored.url);

    let server = Server::spawn(&app.config, &restored.url, &[]);
    let again = Restored {
        server: &server,
        key: &app.keys["app"],
    };
    assert_eq!(again.balance().await, balance, "{backend:?}");
    let db = restored.connect().await;
    assert_eq!(ledger_rows(&db).await, ledger, "{backend:?}");

    // The key issued before the backup still works, and its call is charged
    // and recorded in the restored database.
    let request_id = again.chat().await;
    let row = wait_until(
        "the new call's ledger row",
        || server.log(),
        || async {
            let rows = ledger_rows(&db).await;
            rows.into_iter().find(|r| r.request_id == request_id)
        },
    )
    .await;
    assert!(row.coins_micro > 0, "{row:?}");
    let after = again.balance().await;
    assert!(
        after["balance"].as_f64().unwrap() < balance["balance"].as_f64().unwrap(),
        "{after} after {balance}"
    );
}

async fn ledger_rows(db: &DatabaseConnection) -> Vec<ledger::Model> {
    ledger::Entity::find()
        .order_by_asc(ledger::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// The server started on the restored database, and the key issued before.
struct Restored<'a> {
    server: &'a Server,
    key: &'a str,
}

impl Restored<'_> {
    async fn balance(&self) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/balance", self.server.url))
            .bearer_auth(self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", self.server.log());
        r.json().await.unwrap()
    }

    /// One chat call; returns its request id.
    async fn chat(&self) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.server.url))
            .bearer_auth(self.key)
            .json(&chat_body("dummy"))
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", self.server.log());
        id
    }
}

fn sqlite_file(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap()
}

/// docs/deployment.md, "Back up".
fn back_up(backend: Backend, url: &str, to: &Path) {
    let to = to.to_str().unwrap();
    match backend {
        Backend::Sqlite => run(Command::new("sqlite3")
            .arg(sqlite_file(url))
            .arg(format!(".backup '{to}'"))),
        Backend::Postgres => run(Command::new("pg_dump").args(["-Fc", "-f", to, url])),
    }
}

/// docs/deployment.md, "Restore", into a fresh (empty) database.
fn restore(backend: Backend, from: &Path, url: &str) {
    let from = from.to_str().unwrap();
    match backend {
        Backend::Sqlite => run(Command::new("sqlite3")
            .arg(sqlite_file(url))
            .arg(format!(".restore '{from}'"))),
        Backend::Postgres => {
            run(Command::new("pg_restore").args(["--no-owner", "--exit-on-error", "-d", url, from]))
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
