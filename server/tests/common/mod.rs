//! Test harness: real databases (a temp SQLite file, or a fresh PostgreSQL
//! database), the real `tollgate` binary, real HTTP.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod flaky_upstream;
pub mod protocols_upstream;
pub mod test_app;
pub mod upstream;

#[allow(unused_imports)]
pub use test_app::{chat_body, setup_token_in, wait_until, TestApp, WAIT_LIMIT};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one story, `async fn story(backend: Backend)`, as tests named after
/// the backend: `name::sqlite` and `name::postgres`, or only the one named
/// (`on_backends!(name, story, postgres)`) for a story that is inherently
/// about one backend. A failure then says which database broke.
macro_rules! on_backends {
    ($name:ident, $story:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$story($crate::common::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$story($crate::common::Backend::Postgres).await
            }
        }
    };
    ($name:ident, $story:ident, sqlite) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$story($crate::common::Backend::Sqlite).await
            }
        }
    };
    ($name:ident, $story:ident, postgres) => {
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$story($crate::common::Backend::Postgres).await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_backends;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh, empty database, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}/tollgate.db", dir.path().display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = Database::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL at {PG_ADMIN_URL} is required for the storage tests and is not reachable: {e}. \
                         Start it (pg_ctlcluster <version> main start) or run the README's test command, which does."
                    )
                });
                let name = unique("tg_t");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                TestDb {
                    backend,
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn connect(&self) -> DatabaseConnection {
        app::ssr::db::connect(&self.url).await.unwrap()
    }

    /// Drops a PostgreSQL database now (to simulate an outage).
    pub fn drop_postgres_now(&self) {
        if let Some(name) = &self.pg_name {
            drop_pg(name);
        }
    }
}

fn drop_pg(name: &str) {
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-c",
        ])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            drop_pg(name);
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Runs a one-shot `tollgate` command.
pub fn tollgate(args: &[&str], config: &Path, db_url: &str) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--database-url")
        .arg(db_url)
        .current_dir(workspace_root())
        .env("TOLLGATE_LOG", "info")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

pub fn init_db(config: &Path, db_url: &str) -> String {
    let out = tollgate(&["init-db"], config, db_url);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "init-db failed: {stderr}");
    stderr
}

/// A running `tollgate serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn spawn(config: &Path, db_url: &str, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--database-url")
            .arg(db_url)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .current_dir(workspace_root())
            .env("TOLLGATE_LOG", "info,tollgate=debug")
            .env_remove("TOLLGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("tollgate listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {}", log.lock().unwrap());
            }
        };
        Server { child, url, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Asks the process to stop with SIGTERM, as a service manager would,
    /// and waits (up to 20 s) for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash would: nothing is cleaned up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn health(&self) -> (u16, serde_json::Value) {
        let r = reqwest::get(format!("{}/healthz", self.url)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Waits until the health report satisfies `pred`, or panics after `limit`.
    pub async fn wait_health(
        &self,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (_, h) = self.health().await;
            if pred(&h) {
                return h;
            }
            if start.elapsed() > limit {
                panic!(
                    "condition not met within {limit:?}; last health {h}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads a config file the way the server does.
pub fn load(path: &Path) -> app::ssr::LoadedConfig {
    app::ssr::config_file::load(path).unwrap()
}

pub const SEED_OVERRIDES: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 100.0
    refresh: 0.05
    starting: 100.0
    model_access:
      default: blacklist
  research-bot:
    max: 500.0
    refresh: 1.0
    starting: 500.0
    model_access:
      default: whitelist
      whitelist: [gpt-4o, llama3, qwen3.5-9b-q5]
";

/// POSTs the console's server function `name` at `url` the way a browser form
/// would, from that origin: the status, the JSON answer (or the text), and
/// the `Set-Cookie` values.
pub async fn call_on(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    name: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value, Vec<String>) {
    let mut req = http
        .post(format!("{url}/api/{name}"))
        .header("Accept", "application/json")
        .header("Origin", url)
        .form(form);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        cookies,
    )
}
