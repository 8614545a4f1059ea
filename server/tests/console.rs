//! The web console's server functions over real HTTP: sessions, cookies, the
//! Origin check, throttling, and an authorization matrix that calls every
//! server function as each role and as a signed-out visitor.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::outcome::CallOutcome;
use app::domain::pricing::Price;
use app::domain::usage::Usage;
use app::ssr::ledger::{self, Batch, Charge};
use app::ssr::owners::{self, OwnerKind};
use app::ssr::{db, now_ms, pools};
use common::*;
use serde_json::Value;

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
  gray: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 10
    starting: 10
    model_access: { whitelist: [dummy], graylist: [gray] }
users:
  default:
    max: 5
    starting: 5
    model_access: { whitelist: [dummy], graylist: [gray] }
";

/// The console's server functions, called over HTTP as a browser form would.
impl TestApp {
    /// Creates the first admin, `ada`, through the one-time setup token and
    /// returns the session cookie.
    async fn first_admin(&self, token: &str) -> String {
        let (status, body, cookies) = self
            .call(
                None,
                "setup_admin",
                &[
                    ("token", token),
                    ("username", "ada"),
                    ("password", "admin password 1"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        session_cookie(&cookies)
    }

    /// POSTs a server function on this app's server.
    async fn call(
        &self,
        cookie: Option<&str>,
        name: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value, Vec<String>) {
        call_on(&self.http, self.url(), cookie, name, form).await
    }

    async fn sign_in(&self, user: &str, password: &str) -> String {
        let (status, body, cookies) = self
            .call(None, "login", &[("username", user), ("password", password)])
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        session_cookie(&cookies)
    }

    /// Creates a user with a role as `admin`; returns their session cookie.
    async fn user(&self, admin: &str, name: &str, role: &str) -> String {
        let (s, b, _) = self
            .call(
                Some(admin),
                "create_user_account",
                &[
                    ("username", name),
                    ("role", role),
                    ("password", "long enough pw"),
                ],
            )
            .await;
        assert_eq!(s, 200, "create {name}: {b}");
        self.sign_in(name, "long enough pw").await
    }

    async fn page_status(&self, cookie: Option<&str>, path: &str) -> u16 {
        let mut req = self.http.get(format!("{}{path}", self.url()));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        resp.bytes().await.unwrap();
        status
    }

    async fn login_failures(&self) -> Vec<app::ssr::entities::login_failure::Model> {
        use sea_orm::EntityTrait;
        app::ssr::entities::login_failure::Entity::find()
            .all(&self.db)
            .await
            .unwrap()
    }
}

fn session_cookie(set_cookie: &[String]) -> String {
    let c = set_cookie
        .iter()
        .find(|c| c.starts_with("tg_session="))
        .expect("a session cookie");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    c.split(';').next().unwrap().to_string()
}

/// A fresh console with no admin yet, and the setup token its server logged.
async fn console(backend: Backend) -> (TestApp, String) {
    let app = TestApp::builder(backend).config(CONFIG).spawn().await;
    let token = app.setup_token().expect("the setup address is logged");
    (app, token)
}

async fn role_matrix_story(backend: Backend) {
    let (c, token) = console(backend).await;
    // First admin through the one-time token; a second use is refused.
    let admin = c.first_admin(&token).await;
    let (status, _, _) = c
        .call(
            None,
            "setup_admin",
            &[
                ("token", &token),
                ("username", "eve"),
                ("password", "evil password 1"),
            ],
        )
        .await;
    assert_eq!(status, 403, "the setup token works once");

    for (name, role) in [("mia", "manager"), ("max", "manager"), ("ulla", "user")] {
        let (s, b, _) = c
            .call(
                Some(&admin),
                "create_user_account",
                &[
                    ("username", name),
                    ("role", role),
                    ("password", "long enough pw"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for client in ["alpha", "beta"] {
        let (s, b, _) = c
            .call(Some(&admin), "create_client", &[("name", client)])
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for (client, manager) in [("alpha", "mia"), ("beta", "max")] {
        let (s, b, _) = c
            .call(
                Some(&admin),
                "add_manager",
                &[("client", client), ("username", manager)],
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let mia = c.sign_in("mia", "long enough pw").await;
    let max = c.sign_in("max", "long enough pw").await;
    let ulla = c.sign_in("ulla", "long enough pw").await;
    let (_, beta_key, _) = c
        .call(
            Some(&max),
            "create_client_key",
            &[("client", "beta"), ("label", "b"), ("expires_days", "")],
        )
        .await;
    assert!(beta_key["secret"].as_str().unwrap().starts_with("tg_"));
    let beta_key_id = {
        let (_, d, _) = c
            .call(Some(&admin), "client_detail", &[("name", "beta")])
            .await;
        d["keys"][0]["id"].as_i64().unwrap().to_string()
    };

    // (function, form, expected status for [anonymous, user, manager of alpha, admin])
    type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, [u16; 4]);
    let matrix: Vec<Row> = vec![
        ("current_user", vec![], [200, 200, 200, 200]),
        ("list_clients", vec![("page", "0")], [401, 200, 200, 200]),
        (
            "create_client",
            vec![("name", "gamma")],
            [401, 403, 403, 200],
        ),
        (
            "client_detail",
            vec![("name", "alpha")],
            [401, 404, 200, 200],
        ),
        (
            "client_detail",
            vec![("name", "beta")],
            [401, 404, 404, 200],
        ),
        (
            "create_client_key",
            vec![("client", "alpha"), ("label", "x"), ("expires_days", "30")],
            [401, 404, 200, 200],
        ),
        (
            "create_client_key",
            vec![("client", "beta"), ("label", "x"), ("expires_days", "")],
            [401, 404, 404, 200],
        ),
        (
            "set_client_consent",
            vec![("client", "alpha"), ("model", "gray"), ("consent", "true")],
            [401, 404, 200, 200],
        ),
        (
            "set_client_consent",
            vec![("client", "beta"), ("model", "gray"), ("consent", "true")],
            [401, 404, 404, 200],
        ),
        (
            "add_manager",
            vec![("client", "alpha"), ("username", "ulla")],
            [401, 403, 403, 200],
        ),
        (
            "remove_manager",
            vec![("client", "alpha"), ("username", "ulla")],
            [401, 403, 403, 200],
        ),
        ("my_account", vec![], [401, 200, 200, 200]),
        (
            "create_my_key",
            vec![("label", "mine"), ("expires_days", "")],
            [401, 200, 200, 200],
        ),
        (
            "set_my_consent",
            vec![("model", "gray"), ("consent", "true")],
            [401, 200, 200, 200],
        ),
        ("list_users", vec![], [401, 403, 403, 200]),
        (
            "create_user_account",
            vec![
                ("username", "newbie"),
                ("role", "user"),
                ("password", "long enough pw"),
            ],
            [401, 403, 403, 200],
        ),
        (
            "set_user_role",
            vec![("username", "newbie"), ("role", "manager")],
            [401, 403, 403, 200],
        ),
        (
            "reset_password",
            vec![("username", "newbie"), ("password", "another long pw")],
            [401, 403, 403, 200],
        ),
        (
            "set_user_active",
            vec![("username", "newbie"), ("active", "false")],
            [401, 403, 403, 200],
        ),
        ("config_overview", vec![], [401, 403, 403, 200]),
        ("deployment_health", vec![], [401, 403, 403, 200]),
        ("config_status", vec![], [200, 200, 200, 200]),
        ("setup_needed", vec![], [200, 200, 200, 200]),
        (
            "revoke_key",
            vec![("key_id", &beta_key_id)],
            [401, 404, 404, 200],
        ),
    ];
    let callers = [
        None,
        Some(ulla.as_str()),
        Some(mia.as_str()),
        Some(admin.as_str()),
    ];
    let who = ["anonymous", "user", "manager of alpha", "admin"];
    for (name, form, expected) in &matrix {
        for (i, caller) in callers.iter().enumerate() {
            // The admin column runs last, so the effects of allowed calls never mask a refusal.
            let (status, body, _) = c.call(*caller, name, form).await;
            assert_eq!(
                status, expected[i],
                "{backend:?}: {name} {form:?} as {}: {body}",
                who[i]
            );
        }
    }

    // What each may see, not only whether the call succeeds.
    let (_, page, _) = c.call(Some(&mia), "list_clients", &[("page", "0")]).await;
    let names: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"], "a manager sees only their clients");
    let (_, page, _) = c.call(Some(&ulla), "list_clients", &[("page", "0")]).await;
    assert_eq!(page["rows"].as_array().unwrap().len(), 0);
    let (_, page, _) = c.call(Some(&admin), "list_clients", &[("page", "0")]).await;
    assert_eq!(page["total"], 3);
}
on_backends!(
    every_server_function_checks_the_callers_role,
    role_matrix_story
);

async fn sessions_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;

    // A foreign Origin is refused even with a valid session.
    let resp = c
        .http
        .post(format!("{}/api/create_client", c.url()))
        .header("Accept", "application/json")
        .header("Origin", "https://evil.example")
        .header("Cookie", &admin)
        .form(&[("name", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (_, page, _) = c.call(Some(&admin), "list_clients", &[("page", "0")]).await;
    assert_eq!(page["total"], 0, "the forged request changed nothing");

    // Logout deletes the session on the server: the old cookie stops working.
    let second = c.sign_in("ada", "admin password 1").await;
    let (status, _, cookies) = c.call(Some(&second), "logout", &[]).await;
    assert_eq!(status, 200);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("tg_session=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert_eq!(c.call(Some(&second), "my_account", &[]).await.0, 401);
    assert_eq!(
        c.call(Some(&admin), "my_account", &[]).await.0,
        200,
        "other sessions live on"
    );

    // Deactivating a user ends their sessions at once.
    c.call(
        Some(&admin),
        "create_user_account",
        &[
            ("username", "bob"),
            ("role", "user"),
            ("password", "bob password 1"),
        ],
    )
    .await;
    let bob = c.sign_in("bob", "bob password 1").await;
    assert_eq!(c.call(Some(&bob), "my_account", &[]).await.0, 200);
    c.call(
        Some(&admin),
        "set_user_active",
        &[("username", "bob"), ("active", "false")],
    )
    .await;
    assert_eq!(c.call(Some(&bob), "my_account", &[]).await.0, 401);
    assert_eq!(
        c.call(
            None,
            "login",
            &[("username", "bob"), ("password", "bob password 1")]
        )
        .await
        .0,
        401
    );

    // Repeated failures throttle sign-in, even with the right password;
    // failures older than the window are forgotten.
    use app::ssr::entities::login_failure;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let db = c.db.clone();
    login_failure::Entity::insert(login_failure::ActiveModel {
        username: Set("someone-else".into()),
        at: Set(app::ssr::now_ms() - 24 * 3_600_000),
        ..Default::default()
    })
    .exec_without_returning(&db)
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(
            c.call(None, "login", &[("username", "ada"), ("password", "wrong")])
                .await
                .0,
            401
        );
    }
    let (status, body, _) = c
        .call(
            None,
            "login",
            &[("username", "ada"), ("password", "admin password 1")],
        )
        .await;
    assert_eq!(status, 429, "{backend:?}: {body}");
    let left = login_failure::Entity::find().all(&db).await.unwrap();
    assert!(
        !left.iter().any(|f| f.username == "someone-else"),
        "{backend:?}: old failures pruned: {left:?}"
    );

    // Pages render for signed-out visitors with a message, never a blank page.
    for path in ["/clients", "/users", "/config", "/me", "/clients/nobody"] {
        let html = c
            .http
            .get(format!("{}{path}", c.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("<main"), "{path}");
    }
}
on_backends!(sessions_origin_checks_and_throttling, sessions_story);

/// `tollgate create-admin root-admin` against the app's config and database.
fn create_admin(app: &TestApp, password: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["create-admin", "root-admin", "--config"])
        .arg(&app.config)
        .args(["--database-url", &app.tdb.url])
        .env("TOLLGATE_ADMIN_PASSWORD", password)
        .output()
        .unwrap()
}

async fn create_admin_story(backend: Backend) {
    let mut c = TestApp::builder(backend).config(CONFIG).build().await;
    let run = |password: &str| create_admin(&c, password);
    let short = run("short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
    assert!(run("a long admin password").status.success());
    assert!(
        !run("a long admin password").status.success(),
        "a second admin of the same name is refused"
    );

    c.start();
    assert!(
        !c.log().contains("setup?token="),
        "no setup address once an admin exists"
    );
    let cookie = c.sign_in("root-admin", "a long admin password").await;
    let (status, body, _) = c.call(Some(&cookie), "list_users", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["role"], "admin");
}
on_backends!(create_admin_from_the_host, create_admin_story);

async fn oversized_bodies_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;

    // The flood from the report: a 2 MB username, with no session.
    let huge = "u".repeat(2 * 1024 * 1024);
    for _ in 0..3 {
        let (status, _, _) = c
            .call(None, "login", &[("username", &huge), ("password", "wrong")])
            .await;
        assert_eq!(status, 413, "{backend:?}");
    }
    // Under the body limit but longer than any name or password: refused
    // before anything is hashed or stored.
    let long = "u".repeat(2000);
    let (status, body, _) = c
        .call(None, "login", &[("username", &long), ("password", "wrong")])
        .await;
    assert_eq!(status, 400, "{backend:?}: {body}");
    let (status, body, _) = c
        .call(None, "login", &[("username", "ada"), ("password", &long)])
        .await;
    assert_eq!(status, 400, "{backend:?}: {body}");
    assert!(
        c.login_failures().await.is_empty(),
        "{backend:?}: nothing was stored"
    );
    // The same for a signed-in admin's forms.
    let (status, _, _) = c
        .call(Some(&admin), "create_client", &[("name", &huge)])
        .await;
    assert_eq!(status, 413, "{backend:?}");
    let (status, _, _) = c
        .call(
            Some(&admin),
            "create_user_account",
            &[
                ("username", "newbie"),
                ("role", "user"),
                ("password", &long),
            ],
        )
        .await;
    assert_eq!(
        status, 400,
        "{backend:?}: a 2000-byte password is not hashed"
    );

    // On /v1 the answer is OpenAI-shaped, announced length or not.
    let (s, b, _) = c
        .call(Some(&admin), "create_client", &[("name", "big")])
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, key, _) = c
        .call(
            Some(&admin),
            "create_client_key",
            &[("client", "big"), ("label", ""), ("expires_days", "")],
        )
        .await;
    let key = key["secret"].as_str().unwrap().to_string();
    let chat = |content: String| {
        serde_json::json!({"model": "dummy", "messages": [{"role": "user", "content": content}]})
            .to_string()
    };
    let url = format!("{}/v1/chat/completions", c.url());
    let too_big = chat("x".repeat(9 * 1024 * 1024));
    let sized = c
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body(too_big.clone())
        .send()
        .await
        .unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = too_big
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = c
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    for (how, resp) in [("with a length", sized), ("chunked", streamed)] {
        assert_eq!(resp.status().as_u16(), 413, "{backend:?} {how}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["error"]["code"], "request_too_large",
            "{backend:?} {how}: {v}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["param"].is_null(), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // A long conversation under the limit still goes through.
    let resp = c
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body(chat("x".repeat(3 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{backend:?}");
}
on_backends!(
    oversized_bodies_are_refused_before_anything_is_stored,
    oversized_bodies_story
);

async fn parallel_guesses_story(backend: Backend) {
    let (c, token) = console(backend).await;
    c.first_admin(&token).await;
    let c = std::sync::Arc::new(c);
    let guesses: Vec<_> = (0..30)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let pw = format!("wrong guess {i}");
                c.call(None, "login", &[("username", "ada"), ("password", &pw)])
                    .await
                    .0
            })
        })
        .collect();
    let mut checked = 0;
    for g in guesses {
        match g.await.unwrap() {
            401 => checked += 1,
            429 => {}
            other => panic!("{backend:?}: unexpected status {other}"),
        }
    }
    assert_eq!(checked, 5, "{backend:?}: at most 5 guesses are checked");
    let (status, body, _) = c
        .call(
            None,
            "login",
            &[("username", "ada"), ("password", "admin password 1")],
        )
        .await;
    assert_eq!(
        status, 429,
        "{backend:?}: the right password waits too: {body}"
    );
    let failures = c.login_failures().await;
    assert_eq!(failures.len(), 5, "{backend:?}: {failures:?}");
    assert!(
        failures.iter().all(|f| f.addr == "127.0.0.1"),
        "{backend:?}: the address is recorded: {failures:?}"
    );
}
on_backends!(
    parallel_wrong_guesses_check_at_most_five,
    parallel_guesses_story
);

async fn failures_per_address_story(backend: Backend) {
    use app::ssr::entities::login_failure;
    use app::ssr::session::MAX_FAILURES_PER_ADDR;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let (c, token) = console(backend).await;
    c.first_admin(&token).await;
    // As if this address had already guessed at many different names.
    let db = c.db.clone();
    let now = app::ssr::now_ms();
    login_failure::Entity::insert_many((0..MAX_FAILURES_PER_ADDR).map(|i| {
        login_failure::ActiveModel {
            username: Set(format!("name{i}")),
            at: Set(now),
            addr: Set("127.0.0.1".into()),
            ..Default::default()
        }
    }))
    .exec_without_returning(&db)
    .await
    .unwrap();
    let (status, body, _) = c
        .call(
            None,
            "login",
            &[("username", "fresh-name"), ("password", "x")],
        )
        .await;
    assert_eq!(status, 429, "{backend:?}: {body}");
    assert!(body.to_string().contains("address"), "{body}");
    assert_eq!(
        c.login_failures().await.len() as u64,
        MAX_FAILURES_PER_ADDR,
        "{backend:?}: the table does not grow"
    );
}
on_backends!(
    failed_sign_ins_are_bounded_per_address,
    failures_per_address_story
);

async fn setup_token_story(backend: Backend) {
    // A second instance on the same database, set up through the first.
    let (first, token) = console(backend).await;
    let second = first.spawn_instance();
    let second_token =
        setup_token_in(&second.log()).expect("the second instance logs its own setup address");
    first.first_admin(&token).await;
    let (status, body, _) = call_on(
        &first.http,
        &second.url,
        None,
        "setup_admin",
        &[
            ("token", &second_token),
            ("username", "eve"),
            ("password", "evil password 1"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{backend:?}: {body}");
    let (_, needed, _) = call_on(&first.http, &second.url, None, "setup_needed", &[]).await;
    assert_eq!(needed, Value::Bool(false), "{backend:?}");

    // `tollgate create-admin` from the host, while the server waits for setup.
    let (c2, token2) = console(backend).await;
    let out = create_admin(&c2, "a long admin password");
    assert!(out.status.success(), "{out:?}");
    let (status, body, _) = c2
        .call(
            None,
            "setup_admin",
            &[
                ("token", &token2),
                ("username", "eve"),
                ("password", "evil password 1"),
            ],
        )
        .await;
    assert_eq!(status, 403, "{backend:?}: {body}");
    assert!(
        app::ssr::owners::user_by_name(&c2.db, "eve")
            .await
            .unwrap()
            .is_none(),
        "{backend:?}"
    );
}
on_backends!(setup_token_is_void_once_an_admin_exists, setup_token_story);

async fn last_admin_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let ada = c.first_admin(&token).await;
    for role in ["manager", "user"] {
        let (status, body, _) = c
            .call(
                Some(&ada),
                "set_user_role",
                &[("username", "ada"), ("role", role)],
            )
            .await;
        assert_eq!(status, 409, "{backend:?}: {body}");
    }
    let (status, _, _) = c
        .call(
            Some(&ada),
            "set_user_active",
            &[("username", "ada"), ("active", "false")],
        )
        .await;
    assert_eq!(status, 400, "{backend:?}");

    // With a second admin, one may step down; then the other is the last.
    let ben = c.user(&ada, "ben", "admin").await;
    let (status, body, _) = c
        .call(
            Some(&ada),
            "set_user_role",
            &[("username", "ada"), ("role", "manager")],
        )
        .await;
    assert_eq!(status, 200, "{backend:?}: {body}");
    let (status, body, _) = c
        .call(
            Some(&ben),
            "set_user_role",
            &[("username", "ben"), ("role", "user")],
        )
        .await;
    assert_eq!(status, 409, "{backend:?}: {body}");
    // A deactivated admin does not count as one.
    let (s, _, _) = c
        .call(
            Some(&ben),
            "set_user_role",
            &[("username", "ada"), ("role", "admin")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = c
        .call(
            Some(&ben),
            "set_user_active",
            &[("username", "ada"), ("active", "false")],
        )
        .await;
    assert_eq!(s, 200);
    let (status, body, _) = c
        .call(
            Some(&ben),
            "set_user_role",
            &[("username", "ben"), ("role", "manager")],
        )
        .await;
    assert_eq!(status, 409, "{backend:?}: {body}");
    let (_, users, _) = c.call(Some(&ben), "list_users", &[]).await;
    let active_admins = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin" && u["active"] == true)
        .count();
    assert_eq!(active_admins, 1, "{backend:?}: {users}");
}
on_backends!(the_last_active_admin_stays, last_admin_story);

async fn keys_revoke_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    let (s, b, _) = c
        .call(Some(&admin), "create_client", &[("name", "alpha")])
        .await;
    assert_eq!(s, 200, "{b}");
    let create = || {
        let out = c.tollgate(&["keys", "create", "--client", "alpha"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (k1, k2) = (create(), create());
    let prefix = |k: &str| app::domain::keys::display_prefix(k);
    let revoked = || async {
        let db = c.db.clone();
        let mut r: Vec<String> = app::ssr::keys::list(&db, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.revoked_at.is_some())
            .map(|k| k.prefix)
            .collect();
        r.sort();
        r
    };
    let revoke = |p: &str| c.tollgate(&["keys", "revoke", p]);

    // Ambiguous: both listed, nothing revoked, non-zero exit.
    let out = revoke("tg_");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{backend:?}: {stderr}");
    assert!(
        stderr.contains(&prefix(&k1)) && stderr.contains(&prefix(&k2)),
        "{backend:?}: {stderr}"
    );
    // Wildcards are characters, and case matters.
    let swapped: String = prefix(&k1)
        .chars()
        .map(|ch| {
            if ch.is_ascii_lowercase() {
                ch.to_ascii_uppercase()
            } else {
                ch.to_ascii_lowercase()
            }
        })
        .collect();
    let mut wrong = vec!["tg%".to_string(), "t_".to_string(), "%".to_string()];
    if swapped != prefix(&k1) && !prefix(&k2).starts_with(&swapped) {
        wrong.push(swapped);
    }
    for p in &wrong {
        let out = revoke(p);
        assert!(
            !out.status.success(),
            "{backend:?}: `{p}` revoked something: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(revoked().await.is_empty(), "{backend:?}");
    // The exact prefix revokes exactly that key.
    let out = revoke(&prefix(&k1));
    assert!(out.status.success(), "{backend:?}: {out:?}");
    assert_eq!(revoked().await, vec![prefix(&k1)], "{backend:?}");
}
on_backends!(keys_revoke_matches_prefixes_exactly, keys_revoke_story);

/// Writes ledger rows for an owner's pool the way the gateway's writer does.
async fn write_charges(
    c: &TestApp,
    kind: OwnerKind,
    owner_id: i64,
    rows: Vec<(Usage, CallOutcome, i64)>,
) {
    let pool_id = pools::find(&c.db, kind, owner_id)
        .await
        .unwrap()
        .unwrap()
        .id;
    let price = Price {
        input_micro: 2_500_000,
        output_micro: 10_000_000,
        request_micro: 10_000,
        cached_input_micro: 1_250_000,
        cache_write_micro: 3_000_000,
    };
    let charges = rows
        .into_iter()
        .enumerate()
        .map(|(i, (usage, code, coins))| {
            let lines = price.charge(&usage);
            Charge {
                pool_id,
                lease_id: None,
                key_id: None,
                model: "dummy".into(),
                usage,
                lines,
                coins,
                cost: coins,
                overage: 0,
                request_id: format!("req-{i}"),
                deployment: String::new(),
                code,
                detail: String::new(),
            }
        })
        .collect();
    let batch = Batch {
        charges,
        ..Batch::default()
    };
    let txn = db::begin_write(&c.db).await.unwrap();
    ledger::apply_batch(&txn, "test", &batch, now_ms())
        .await
        .unwrap();
    txn.commit().await.unwrap();
}

async fn charge_explained_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    c.call(Some(&admin), "create_client", &[("name", "alpha")])
        .await;
    let alpha = owners::client_by_name(&c.db, "alpha")
        .await
        .unwrap()
        .unwrap();
    let served = Usage {
        input: 800,
        cached_input: 200,
        cache_write: 0,
        output: 50,
        reasoning: 20,
    };
    write_charges(
        &c,
        OwnerKind::Client,
        alpha.id,
        vec![
            (served, CallOutcome::Ok, 2_760_000),
            (Usage::default(), CallOutcome::Abandoned, 4_000_000),
        ],
    )
    .await;

    // The page data carries the breakdown as stored.
    let (_, detail, _) = c
        .call(Some(&admin), "client_detail", &[("name", "alpha")])
        .await;
    let ok = &detail["recent"][1];
    assert_eq!(ok["code"], "ok", "{backend:?}: {detail}");
    assert_eq!(ok["usage"]["cached_input"], 200, "{backend:?}");
    assert_eq!(ok["usage"]["reasoning"], 20, "{backend:?}");
    assert_eq!(ok["lines"]["cached_input"], 250_000, "{backend:?}");
    assert_eq!(ok["lines"]["request"], 10_000, "{backend:?}");

    // The page, as served before any script runs, explains each charge.
    let page = |path: &'static str| {
        let req = c
            .http
            .get(format!("{}{path}", c.url()))
            .header("Cookie", &admin);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let html = page("/clients/alpha").await;
    for line in [
        "input 800 tok = 2",
        "cached input 200 tok = 0.25",
        "output 50 tok (20 reasoning) = 0.5",
        "request fee = 0.01",
        "total = 2.76",
        "the caller left before the reply, so the reservation (4) was charged",
        "charged = 4",
    ] {
        assert!(html.contains(line), "{backend:?}: no `{line}` in the page");
    }
    assert!(
        !html.contains("cache write"),
        "{backend:?}: zero lines are left out"
    );

    // Admins' Deployments page, as served: every catalog model's deployment
    // with its breaker.
    let html = page("/deployments").await;
    assert!(
        html.contains("data-testid=\"deployments\"")
            && html.contains("data-testid=\"deployment-row\""),
        "{backend:?}: the deployments table"
    );
    assert!(
        html.contains("closed"),
        "{backend:?}: breakers start closed"
    );

    let ada = owners::user_by_name(&c.db, "ada").await.unwrap().unwrap();
    write_charges(
        &c,
        OwnerKind::User,
        ada.id,
        vec![(Usage::default(), CallOutcome::Refused, 0)],
    )
    .await;
    let html = page("/me").await;
    assert!(
        html.contains("refused before anything went upstream: nothing charged"),
        "{backend:?}: /me explains its charges too"
    );
}
on_backends!(recent_calls_explain_each_charge, charge_explained_story);

async fn labels_and_managers_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    c.user(&admin, "mia", "manager").await;
    c.call(Some(&admin), "create_client", &[("name", "alpha")])
        .await;
    let long = "l".repeat(101);
    for bad in [
        long.as_str(),
        "invoice\u{202E}fdp.exe",
        "a\u{2067}b",
        "x\u{200F}",
        "\u{061C}y",
    ] {
        let (status, body, _) = c
            .call(
                Some(&admin),
                "create_client_key",
                &[("client", "alpha"), ("label", bad), ("expires_days", "")],
            )
            .await;
        assert_eq!(status, 400, "{backend:?}: {bad:?}: {body}");
    }
    let fine = "l".repeat(100);
    let (status, body, _) = c
        .call(
            Some(&admin),
            "create_client_key",
            &[("client", "alpha"), ("label", &fine), ("expires_days", "")],
        )
        .await;
    assert_eq!(status, 200, "{backend:?}: {body}");
    let (_, detail, _) = c
        .call(Some(&admin), "client_detail", &[("name", "alpha")])
        .await;
    assert_eq!(detail["keys"].as_array().unwrap().len(), 1, "{backend:?}");

    // Added with spaces, removed with spaces: the same user both times.
    for f in ["add_manager", "remove_manager"] {
        let (status, body, _) = c
            .call(
                Some(&admin),
                f,
                &[("client", "alpha"), ("username", "  mia ")],
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {f}: {body}");
        let (_, detail, _) = c
            .call(Some(&admin), "client_detail", &[("name", "alpha")])
            .await;
        let expected: Vec<&str> = if f == "add_manager" {
            vec!["mia"]
        } else {
            vec![]
        };
        assert_eq!(
            detail["managers"],
            serde_json::json!(expected),
            "{backend:?}: {f}"
        );
    }
}
on_backends!(
    labels_are_short_and_plain_and_manager_names_normalised,
    labels_and_managers_story
);

async fn bearer_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    let bob = c.user(&admin, "bob", "user").await;
    let (_, key, _) = c
        .call(
            Some(&bob),
            "create_my_key",
            &[("label", ""), ("expires_days", "")],
        )
        .await;
    let key = key["secret"].as_str().unwrap().to_string();
    let balance = |auth: String| {
        let c = &c;
        async move {
            let resp = c
                .http
                .get(format!("{}/v1/balance", c.url()))
                .header("Authorization", auth)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, body) = balance(format!("{scheme} {key}")).await;
        assert_eq!(status, 200, "{backend:?}: {scheme}: {body}");
    }
    let (status, _) = balance(format!("Basic {key}")).await;
    assert_eq!(status, 401, "{backend:?}");

    let (s, _, _) = c
        .call(
            Some(&admin),
            "set_user_active",
            &[("username", "bob"), ("active", "false")],
        )
        .await;
    assert_eq!(s, 200);
    let (status, body) = balance(format!("Bearer {key}")).await;
    assert_eq!(status, 401, "{backend:?}: {body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("deactivated"), "{backend:?}: {message}");
}
on_backends!(
    bearer_is_case_insensitive_and_deactivated_users_keys_say_so,
    bearer_story
);

async fn refused_pages_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    let mia = c.user(&admin, "mia", "manager").await;
    for name in ["alpha", "beta"] {
        c.call(Some(&admin), "create_client", &[("name", name)])
            .await;
    }
    c.call(
        Some(&admin),
        "add_manager",
        &[("client", "alpha"), ("username", "mia")],
    )
    .await;
    for (who, cookie, path, expected) in [
        ("manager", Some(mia.as_str()), "/users", 403),
        ("manager", Some(mia.as_str()), "/config", 403),
        ("manager", Some(mia.as_str()), "/clients/beta", 404),
        ("manager", Some(mia.as_str()), "/clients/alpha", 200),
        ("anonymous", None, "/me", 401),
        ("admin", Some(admin.as_str()), "/users", 200),
    ] {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(c.page_status(cookie, path).await);
        }
        assert!(
            seen.iter().all(|s| *s == expected),
            "{backend:?}: {path} as {who}: {seen:?}"
        );
    }
}
on_backends!(
    refused_pages_answer_the_same_status_every_time,
    refused_pages_story
);

async fn no_js_key_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    c.call(Some(&admin), "create_client", &[("name", "alpha")])
        .await;
    // What a browser sends for the key form before the page is hydrated.
    let plain_post = |path: &str, referer: &str, form: &[(&str, &str)]| {
        c.http
            .post(format!("{}/api/{path}", c.url()))
            .header(
                "Accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            )
            .header("Origin", c.url())
            .header("Referer", format!("{}{referer}", c.url()))
            .header("Cookie", &admin)
            .form(form)
    };
    for (path, referer, form) in [
        (
            "create_client_key",
            "/clients/alpha",
            vec![("client", "alpha"), ("label", "nojs"), ("expires_days", "")],
        ),
        (
            "create_my_key",
            "/me",
            vec![("label", "nojs"), ("expires_days", "")],
        ),
    ] {
        let resp = plain_post(path, referer, &form).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 400, "{backend:?}: {path}: {text}");
        assert!(!text.contains("tg_"), "{backend:?}: {text}");
    }
    let (_, detail, _) = c
        .call(Some(&admin), "client_detail", &[("name", "alpha")])
        .await;
    assert_eq!(detail["keys"], serde_json::json!([]), "{backend:?}");
    let (_, me, _) = c.call(Some(&admin), "my_account", &[]).await;
    assert_eq!(me["keys"], serde_json::json!([]), "{backend:?}");
}
on_backends!(no_key_is_created_unseen_before_hydration, no_js_key_story);

async fn public_url_origin_story(backend: Backend) {
    let c = TestApp::builder(backend)
        .config(&format!(
            "server:\n  public_url: https://gate.example.org\n{CONFIG}"
        ))
        .spawn()
        .await;
    let post = |origin: &[u8]| {
        c.http
            .post(format!("{}/api/login", c.url()))
            .header("Accept", "application/json")
            .header(
                "Origin",
                reqwest::header::HeaderValue::from_bytes(origin).unwrap(),
            )
            .form(&[("username", "nobody"), ("password", "whatever")])
            .send()
    };
    // The origin that matches Host is not the public URL: refused.
    let own = c.url().to_string();
    assert_eq!(
        post(own.as_bytes()).await.unwrap().status().as_u16(),
        403,
        "{backend:?}"
    );
    for bad in [
        &b"https://gate.example.org/"[..],
        b"https://gate.example.org.evil.example",
        b"gate.example.org",
        b"https://gate.example.org\xff",
    ] {
        assert_eq!(
            post(bad).await.unwrap().status().as_u16(),
            403,
            "{backend:?}: {}",
            String::from_utf8_lossy(bad)
        );
    }
    // The public origin itself goes through to the server function.
    assert_eq!(
        post(b"https://gate.example.org")
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "{backend:?}"
    );
}
on_backends!(only_the_public_origin_is_accepted, public_url_origin_story);

async fn key_limits_story(backend: Backend) {
    let (c, token) = console(backend).await;
    let admin = c.first_admin(&token).await;
    c.call(Some(&admin), "create_client", &[("name", "alpha")])
        .await;
    let form = |rpm: &'static str, tpm: &'static str| {
        vec![
            ("client", "alpha"),
            ("label", "capped"),
            ("expires_days", ""),
            ("requests_per_minute", rpm),
            ("tokens_per_minute", tpm),
        ]
    };
    for (rpm, tpm, says) in [
        ("0", "", "Requests per minute"),
        ("ten", "", "Requests per minute"),
        ("", "-5", "Tokens per minute"),
    ] {
        let (s, b, _) = c
            .call(Some(&admin), "create_client_key", &form(rpm, tpm))
            .await;
        assert_eq!(s, 400, "{backend:?}: {rpm} {tpm}: {b}");
        assert!(b.to_string().contains(says), "{b}");
    }
    let (s, key, _) = c
        .call(Some(&admin), "create_client_key", &form("1", ""))
        .await;
    assert_eq!(s, 200, "{key}");
    let (_, detail, _) = c
        .call(Some(&admin), "client_detail", &[("name", "alpha")])
        .await;
    assert_eq!(detail["keys"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(
        detail["keys"][0]["limits"],
        serde_json::json!({"requests_per_minute": 1, "tokens_per_minute": null})
    );
    // The gateway holds the key to it (the config gives clients no limit).
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.url()))
        .bearer_auth(key["secret"].as_str().unwrap())
        .json(&chat_body("dummy"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "1");
    // A user's own key, from /me; the form there has the same fields.
    let (s, b, _) = c
        .call(
            Some(&admin),
            "create_my_key",
            &[
                ("label", "mine"),
                ("expires_days", ""),
                ("tokens_per_minute", "500"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, me, _) = c.call(Some(&admin), "my_account", &[]).await;
    assert_eq!(me["keys"][0]["limits"]["tokens_per_minute"], 500, "{me}");
    let page = c
        .http
        .get(format!("{}/me", c.url()))
        .header("Cookie", &admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"requests_per_minute\"") && page.contains("500 tokens/min"),
        "{backend:?}"
    );
}
on_backends!(
    a_key_created_in_the_console_carries_its_limits,
    key_limits_story
);
