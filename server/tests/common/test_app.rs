//! One test application: a fresh database, a config file, optionally clients
//! with keys, and the real `tollgate serve` on port 0. Every integration test
//! file builds on this instead of a setup of its own.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

use super::{init_db, load, tollgate, write, Backend, Server, TestDb};
use app::ssr::entities::{ledger, pool};
use app::ssr::owners::{create_client, OwnerKind};
use app::ssr::{keys, now_ms, pools};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long any awaited condition may take before the test fails. A
/// generous bound on a condition, never a performance target.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics after [`WAIT_LIMIT`]
/// with `what` and whatever `context` says then (a server log, say).
pub async fn wait_until<T, F, Fut>(what: &str, context: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if start.elapsed() > WAIT_LIMIT {
            panic!("{what}: not within {WAIT_LIMIT:?}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestAppBuilder {
    backend: Backend,
    config: String,
    init_db: bool,
    clients: Vec<String>,
    keys: Vec<String>,
    env: Vec<(String, String)>,
}

impl TestAppBuilder {
    /// The YAML written to `tollgate.yaml` next to the database.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = yaml.to_string();
        self
    }

    /// Runs `tollgate init-db` before anything else. Without it (and without
    /// clients) the database is left empty: the server migrates it itself.
    pub fn init_db(mut self) -> Self {
        self.init_db = true;
        self
    }

    /// Clients created as the admin UI does, with the config's settings.
    /// Implies [`Self::init_db`].
    pub fn clients(mut self, names: &[&str]) -> Self {
        self.init_db = true;
        self.clients = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// One API key for each named client, in [`TestApp::keys`] by client name.
    pub fn keys(mut self, clients: &[&str]) -> Self {
        self.keys = clients.iter().map(|n| n.to_string()).collect();
        self
    }

    /// An environment variable for every server this app starts (an
    /// upstream's API key, say).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The database and config, ready; no server yet ([`TestApp::start`]).
    pub async fn build(self) -> TestApp {
        let tdb = TestDb::new(self.backend).await;
        let config = tdb.dir.path().join("tollgate.yaml");
        write(&config, &self.config);
        if self.init_db {
            init_db(&config, &tdb.url);
        }
        let db = tdb.connect().await;
        let mut app = TestApp {
            backend: self.backend,
            tdb,
            config,
            db,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            client_ids: HashMap::new(),
            keys: HashMap::new(),
            env: self.env,
            server: None,
        };
        if !self.clients.is_empty() {
            let loaded = load(&app.config);
            for name in &self.clients {
                let c = create_client(&app.db, &loaded.config, name, None, now_ms())
                    .await
                    .unwrap();
                app.client_ids.insert(name.clone(), c.id);
            }
        }
        for name in &self.keys {
            let secret = app.create_key(name).await;
            app.keys.insert(name.clone(), secret);
        }
        app
    }

    /// As [`Self::build`], then starts `tollgate serve`.
    pub async fn spawn(self) -> TestApp {
        let mut app = self.build().await;
        app.start();
        app
    }
}

/// A database, its config file and (once started) a running server.
pub struct TestApp {
    pub backend: Backend,
    /// Owns the temp directory and the database; both go when this drops.
    pub tdb: TestDb,
    /// The config file the server reads and watches.
    pub config: PathBuf,
    pub db: DatabaseConnection,
    /// Follows no redirects, so a test sees what the server answered.
    pub http: reqwest::Client,
    /// Client ids by name, for the clients the builder created.
    pub client_ids: HashMap<String, i64>,
    /// Key secrets by client name.
    pub keys: HashMap<String, String>,
    env: Vec<(String, String)>,
    server: Option<Server>,
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            config: String::new(),
            init_db: false,
            clients: Vec::new(),
            keys: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Starts `tollgate serve` on this database and config.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        self.server = Some(self.spawn_instance());
    }

    /// Another `tollgate serve` on the same database and config file.
    pub fn spawn_instance(&self) -> Server {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Server::spawn(&self.config, &self.tdb.url, &env)
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server was started")
    }

    pub fn server_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("the server was started")
    }

    pub fn url(&self) -> &str {
        &self.server().url
    }

    /// The server's log so far, or a note that there is no server.
    pub fn log(&self) -> String {
        self.server
            .as_ref()
            .map_or_else(|| "(no server)".to_string(), Server::log)
    }

    /// The one-time setup token the server logs while no admin exists.
    pub fn setup_token(&self) -> Option<String> {
        setup_token_in(&self.log())
    }

    // ---- the command line ----

    /// Runs a one-shot `tollgate` command against this config and database.
    pub fn tollgate(&self, args: &[&str]) -> std::process::Output {
        tollgate(args, &self.config, &self.tdb.url)
    }

    /// Runs `tollgate init-db` again; returns its stderr.
    pub fn init_db(&self) -> String {
        init_db(&self.config, &self.tdb.url)
    }

    pub fn write_config(&self, yaml: &str) {
        write(&self.config, yaml);
    }

    pub fn load_config(&self) -> app::ssr::LoadedConfig {
        load(&self.config)
    }

    // ---- the database ----

    pub fn client_id(&self, client: &str) -> i64 {
        *self
            .client_ids
            .get(client)
            .unwrap_or_else(|| panic!("no client {client} was created by the builder"))
    }

    /// Issues a new key for a client the builder created; returns the secret.
    pub async fn create_key(&self, client: &str) -> String {
        keys::create(
            &self.db,
            OwnerKind::Client,
            self.client_id(client),
            "test",
            None,
            None,
            now_ms(),
        )
        .await
        .unwrap()
        .secret
    }

    /// The client's pool row as stored.
    pub async fn pool(&self, client: &str) -> pool::Model {
        pools::find(&self.db, OwnerKind::Client, self.client_id(client))
            .await
            .unwrap()
            .unwrap()
    }

    /// What the client can still spend: its pool plus what the gateway holds
    /// on lease for it.
    pub async fn balance(&self, client: &str) -> i64 {
        let pool = self.pool(client).await;
        pools::current(&self.db, &pool, now_ms())
            .await
            .unwrap()
            .balance
    }

    pub async fn ledger_for(&self, client: &str) -> Vec<ledger::Model> {
        let pool = self.pool(client).await;
        ledger::Entity::find()
            .filter(ledger::Column::PoolId.eq(pool.id))
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn ledger_row(&self, request_id: &str) -> Option<ledger::Model> {
        ledger::Entity::find()
            .filter(ledger::Column::RequestId.eq(request_id))
            .one(&self.db)
            .await
            .unwrap()
    }

    /// Polls `check` until it returns `Some`; on failure the server log is shown.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        wait_until(what, || format!("log:\n{}", self.log()), check).await
    }

    /// Ledger rows are written behind the responses: waits for one.
    pub async fn wait_ledger_row(&self, request_id: &str) -> ledger::Model {
        self.wait_for(&format!("a ledger row for {request_id}"), || {
            self.ledger_row(request_id)
        })
        .await
    }

    /// Waits until the client's pool has at least `n` ledger rows; returns them.
    pub async fn wait_ledger_rows(&self, client: &str, n: usize) -> Vec<ledger::Model> {
        self.wait_for(&format!("{n} ledger rows for {client}"), || async move {
            let rows = self.ledger_for(client).await;
            (rows.len() >= n).then_some(rows)
        })
        .await
    }

    // ---- HTTP ----

    pub async fn health(&self) -> (u16, Value) {
        self.server().health().await
    }

    /// Waits until the health report satisfies `pred`; returns that report.
    pub async fn wait_health(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.server().wait_health(WAIT_LIMIT, pred).await
    }

    /// POSTs JSON, with a bearer key if given; returns status, body (JSON,
    /// or the text as a JSON string) and `x-request-id`.
    pub async fn post(
        &self,
        key: Option<&str>,
        path: &str,
        body: Value,
    ) -> (u16, Value, Option<String>) {
        let mut req = self.http.post(format!("{}{path}", self.url())).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        reply(req.send().await.unwrap()).await
    }

    /// GETs with a bearer key; returns status and JSON body.
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url()))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let (status, body, _) = reply(resp).await;
        (status, body)
    }

    /// Sends a chat call with a client's key and returns the raw response, for streams.
    pub async fn send_chat(&self, client: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url()))
            .bearer_auth(&self.keys[client])
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A one-message chat call with a client's key.
    pub async fn chat(&self, client: &str, model: &str) -> (u16, Value, Option<String>) {
        self.post(
            Some(&self.keys[client]),
            "/v1/chat/completions",
            chat_body(model),
        )
        .await
    }
}

pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

pub fn setup_token_in(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split("setup?token=").nth(1))
        .map(|t| t.trim().to_string())
}

async fn reply(resp: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = resp.status().as_u16();
    let rid = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json, rid)
}
