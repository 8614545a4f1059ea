//! The web console's server functions over real HTTP: sessions, cookies, the
//! Origin check, throttling, and an authorization matrix that calls every
//! server function as each role and as a signed-out visitor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

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

struct Console {
    server: Server,
    http: reqwest::Client,
}

impl Console {
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

    /// POSTs a server function the way a browser form would, from our origin.
    async fn call(
        &self,
        cookie: Option<&str>,
        name: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value, Vec<String>) {
        let mut req = self
            .http
            .post(format!("{}/api/{name}", self.server.url))
            .header("Accept", "application/json")
            .header("Origin", &self.server.url)
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
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            cookies,
        )
    }

    async fn sign_in(&self, user: &str, password: &str) -> String {
        let (status, body, cookies) = self
            .call(None, "login", &[("username", user), ("password", password)])
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        session_cookie(&cookies)
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

async fn start(backend: Backend) -> (TestDb, Console, String) {
    let tdb = TestDb::new(backend).await;
    let cfg = tdb.dir.path().join("tollgate.yaml");
    write(&cfg, CONFIG);
    let server = Server::spawn(&cfg, &tdb.url, &[]);
    let console = Console {
        server,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let log = console.server.log();
    let token = log
        .lines()
        .find_map(|l| l.split("setup?token=").nth(1))
        .expect("the setup address is logged")
        .trim()
        .to_string();
    (tdb, console, token)
}

#[tokio::test]
async fn every_server_function_checks_the_callers_role() {
    for backend in BACKENDS {
        let (_tdb, c, token) = start(backend).await;
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
}

#[tokio::test]
async fn sessions_origin_checks_and_throttling() {
    for backend in BACKENDS {
        let (tdb, c, token) = start(backend).await;
        let admin = c.first_admin(&token).await;

        // A foreign Origin is refused even with a valid session.
        let resp = c
            .http
            .post(format!("{}/api/create_client", c.server.url))
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
        let db = tdb.connect().await;
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
                .get(format!("{}{path}", c.server.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(html.contains("<main"), "{path}");
        }
    }
}

#[tokio::test]
async fn create_admin_from_the_host() {
    for backend in BACKENDS {
        let tdb = TestDb::new(backend).await;
        let cfg = tdb.dir.path().join("tollgate.yaml");
        write(&cfg, CONFIG);
        let run = |password: &str| {
            std::process::Command::new(bin())
                .args(["create-admin", "root-admin", "--config"])
                .arg(&cfg)
                .args(["--database-url", &tdb.url])
                .env("TOLLGATE_ADMIN_PASSWORD", password)
                .output()
                .unwrap()
        };
        let short = run("short");
        assert!(!short.status.success());
        assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
        assert!(run("a long admin password").status.success());
        assert!(
            !run("a long admin password").status.success(),
            "a second admin of the same name is refused"
        );

        let server = Server::spawn(&cfg, &tdb.url, &[]);
        assert!(
            !server.log().contains("setup?token="),
            "no setup address once an admin exists"
        );
        let c = Console {
            server,
            http: reqwest::Client::new(),
        };
        let cookie = c.sign_in("root-admin", "a long admin password").await;
        let (status, body, _) = c.call(Some(&cookie), "list_users", &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body[0]["role"], "admin");
    }
}
