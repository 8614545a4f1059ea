//! The audit trail over real HTTP and the real command line: every console
//! action, sign-in and config reload recorded with its actor, target and
//! address; `tollgate audit verify` on an intact, an edited and a cut
//! chain; appends from two instances at once; the admins-only page and its
//! CSV export.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::ssr::audit::{self, Action, Entry};
use app::ssr::entities::audit_log;
use common::*;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};
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

fn session_cookie(set_cookie: &[String]) -> String {
    let c = set_cookie
        .iter()
        .find(|c| c.starts_with("tg_session="))
        .expect("a session cookie");
    c.split(';').next().unwrap().to_string()
}

impl TestApp {
    async fn call(
        &self,
        cookie: Option<&str>,
        name: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value, Vec<String>) {
        call_on(&self.http, self.url(), cookie, name, form).await
    }

    /// Calls a server function that must succeed; returns its answer.
    async fn ok(&self, cookie: &str, name: &str, form: &[(&str, &str)]) -> Value {
        let (s, b, _) = self.call(Some(cookie), name, form).await;
        assert_eq!(s, 200, "{name} {form:?}: {b}");
        b
    }

    /// Creates the first admin, `ada`; returns the session cookie.
    async fn first_admin(&self) -> String {
        let token = self.setup_token().expect("the setup address is logged");
        let (status, body, cookies) = self
            .call(
                None,
                "setup_admin",
                &[
                    ("token", &token),
                    ("username", "ada"),
                    ("password", "admin password 1"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        session_cookie(&cookies)
    }

    async fn sign_in(&self, user: &str, password: &str) -> String {
        let (status, body, cookies) = self
            .call(None, "login", &[("username", user), ("password", password)])
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        session_cookie(&cookies)
    }

    /// Every entry, in `seq` order.
    async fn trail(&self) -> Vec<audit_log::Model> {
        audit_log::Entity::find()
            .order_by_asc(audit_log::Column::Seq)
            .all(&self.db)
            .await
            .unwrap()
    }

    /// Every entry after `seq`, as (actor, action, target, addr, detail).
    async fn since(&self, seq: i64) -> Vec<(String, String, String, String, String)> {
        self.trail()
            .await
            .into_iter()
            .filter(|e| e.seq > seq)
            .map(|e| (e.actor, e.action, e.target, e.addr, e.detail))
            .collect()
    }

    async fn last_seq(&self) -> i64 {
        self.trail().await.last().map_or(0, |e| e.seq)
    }

    fn verify(&self) -> (bool, String) {
        let out = self.tollgate(&["audit", "verify"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    async fn sql(&self, statement: &str) {
        self.db.execute_unprepared(statement).await.unwrap();
    }

    /// GETs a path with a session cookie; returns status and body.
    async fn get_text(&self, cookie: Option<&str>, path: &str) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.url()));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// A fresh console with no admin yet.
async fn console(backend: Backend) -> TestApp {
    TestApp::builder(backend).config(CONFIG).spawn().await
}

fn row(
    actor: &str,
    action: &str,
    target: &str,
    addr: &str,
    detail: &str,
) -> (String, String, String, String, String) {
    (
        actor.into(),
        action.into(),
        target.into(),
        addr.into(),
        detail.into(),
    )
}

const HERE: &str = "127.0.0.1";

/// Accounts: setup, sign-ins (failed, throttled, odd names), users, roles,
/// (de)activation, password resets, sign-out. Refused actions leave no entry.
async fn accounts_story(backend: Backend) {
    let c = console(backend).await;
    let start = c.trail().await;
    assert_eq!(start.len(), 1, "the start-up apply: {start:?}");
    assert_eq!(
        (start[0].actor.as_str(), start[0].action.as_str()),
        ("config", "config_reloaded")
    );
    assert!(
        start[0].detail.starts_with("generation 1: ")
            && start[0].detail.contains("models.gray added"),
        "{}",
        start[0].detail
    );
    let admin = c.first_admin().await;
    let (s, _, _) = c
        .call(
            None,
            "login",
            &[("username", "ada"), ("password", "wrong password")],
        )
        .await;
    assert_eq!(s, 401);
    let ada = c.sign_in("ada", "admin password 1").await;
    c.ok(
        &admin,
        "create_user_account",
        &[
            ("username", "bob"),
            ("role", "manager"),
            ("password", "long enough pw"),
        ],
    )
    .await;
    c.ok(
        &admin,
        "set_user_role",
        &[("username", "bob"), ("role", "user")],
    )
    .await;
    // The same role again changes nothing, and records nothing.
    c.ok(
        &admin,
        "set_user_role",
        &[("username", "bob"), ("role", "user")],
    )
    .await;
    c.ok(
        &admin,
        "set_user_active",
        &[("username", "bob"), ("active", "false")],
    )
    .await;
    c.ok(
        &admin,
        "set_user_active",
        &[("username", "bob"), ("active", "true")],
    )
    .await;
    c.ok(
        &admin,
        "reset_password",
        &[("username", "bob"), ("password", "a new password")],
    )
    .await;
    let bob = c.sign_in("bob", "a new password").await;
    // Refused: not recorded.
    assert_eq!(
        c.call(
            Some(&bob),
            "create_user_account",
            &[
                ("username", "eve"),
                ("role", "admin"),
                ("password", "long enough pw")
            ]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        c.call(
            Some(&admin),
            "set_user_role",
            &[("username", "nobody"), ("role", "user")]
        )
        .await
        .0,
        404
    );
    assert_eq!(
        c.call(
            Some(&admin),
            "set_user_active",
            &[("username", "ada"), ("active", "false")]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.call(
            Some(&admin),
            "create_user_account",
            &[
                ("username", "bad name"),
                ("role", "user"),
                ("password", "long enough pw")
            ]
        )
        .await
        .0,
        400
    );
    // A name with a comma, a quote and a line break is recorded as typed.
    let odd = "x,\"y\"\nz";
    assert_eq!(
        c.call(
            None,
            "login",
            &[("username", odd), ("password", "whatever pw")]
        )
        .await
        .0,
        401
    );
    // Five failures for a name, then the throttled sixth: all recorded.
    for _ in 0..5 {
        assert_eq!(
            c.call(
                None,
                "login",
                &[("username", "carol"), ("password", "guess guess")]
            )
            .await
            .0,
            401
        );
    }
    assert_eq!(
        c.call(
            None,
            "login",
            &[("username", "carol"), ("password", "guess guess")]
        )
        .await
        .0,
        429
    );
    // Refusals that check no password are recorded once a minute per name
    // or address, however fast they come.
    for _ in 0..3 {
        assert_eq!(
            c.call(
                None,
                "login",
                &[("username", "carol"), ("password", "guess guess")]
            )
            .await
            .0,
            429
        );
    }
    let huge = "p".repeat(5000);
    for name in ["dave", "erin", "dave"] {
        assert_eq!(
            c.call(None, "login", &[("username", name), ("password", &huge)])
                .await
                .0,
            400
        );
    }
    assert_eq!(c.call(Some(&bob), "logout", &[]).await.0, 200);
    // Signing out without a session records nothing.
    assert_eq!(c.call(None, "logout", &[]).await.0, 200);
    drop(ada);

    let mut expected = vec![
        row(
            "ada",
            "admin_created",
            "user:ada",
            HERE,
            "the first admin, through /setup; signed in",
        ),
        row("ada", "sign_in_failed", "user:ada", HERE, "wrong password"),
        row("ada", "sign_in", "user:ada", HERE, ""),
        row("ada", "user_created", "user:bob", HERE, "role: manager"),
        row("ada", "role_changed", "user:bob", HERE, "manager → user"),
        row("ada", "user_deactivated", "user:bob", HERE, ""),
        row("ada", "user_reactivated", "user:bob", HERE, ""),
        row(
            "ada",
            "password_reset",
            "user:bob",
            HERE,
            "their sessions ended",
        ),
        row("bob", "sign_in", "user:bob", HERE, ""),
        row(
            odd,
            "sign_in_failed",
            &format!("user:{odd}"),
            HERE,
            "no such user",
        ),
    ];
    for _ in 0..5 {
        expected.push(row(
            "carol",
            "sign_in_failed",
            "user:carol",
            HERE,
            "no such user",
        ));
    }
    expected.push(row(
        "carol",
        "sign_in_failed",
        "user:carol",
        HERE,
        "throttled: too many failed sign-ins for this name",
    ));
    expected.push(row(
        "dave",
        "sign_in_failed",
        "user:dave",
        HERE,
        "invalid input",
    ));
    expected.push(row("bob", "sign_out", "user:bob", HERE, ""));
    assert_eq!(c.since(start[0].seq).await, expected, "{backend:?}");
    let (ok, out) = c.verify();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "audit chain intact: {} entries",
            expected.len() + 1
        )),
        "{out}"
    );
}
on_backends!(account_actions_are_recorded, accounts_story);

/// Clients: creation, keys (console and CLI), consents, managers.
async fn clients_story(backend: Backend) {
    let c = console(backend).await;
    let admin = c.first_admin().await;
    c.ok(
        &admin,
        "create_user_account",
        &[
            ("username", "mia"),
            ("role", "manager"),
            ("password", "long enough pw"),
        ],
    )
    .await;
    let before = c.last_seq().await;
    c.ok(&admin, "create_client", &[("name", "acme")]).await;
    assert_eq!(
        c.call(Some(&admin), "create_client", &[("name", "acme")])
            .await
            .0,
        400,
        "a duplicate"
    );
    c.ok(
        &admin,
        "add_manager",
        &[("client", "acme"), ("username", "mia")],
    )
    .await;
    c.ok(
        &admin,
        "add_manager",
        &[("client", "acme"), ("username", "mia")],
    )
    .await;
    let mia = c.sign_in("mia", "long enough pw").await;
    let key = c
        .ok(
            &mia,
            "create_client_key",
            &[("client", "acme"), ("label", "ci"), ("expires_days", "")],
        )
        .await;
    let prefix = key["prefix"].as_str().unwrap().to_string();
    let detail = c.ok(&admin, "client_detail", &[("name", "acme")]).await;
    let key_id = detail["keys"][0]["id"].as_i64().unwrap().to_string();
    c.ok(&mia, "revoke_key", &[("key_id", &key_id)]).await;
    c.ok(&mia, "revoke_key", &[("key_id", &key_id)]).await;
    c.ok(
        &mia,
        "set_client_consent",
        &[("client", "acme"), ("model", "gray"), ("consent", "true")],
    )
    .await;
    c.ok(
        &mia,
        "set_client_consent",
        &[("client", "acme"), ("model", "gray"), ("consent", "true")],
    )
    .await;
    c.ok(
        &mia,
        "set_client_consent",
        &[("client", "acme"), ("model", "gray"), ("consent", "false")],
    )
    .await;
    c.ok(
        &mia,
        "set_my_consent",
        &[("model", "gray"), ("consent", "true")],
    )
    .await;
    let mine = c
        .ok(
            &mia,
            "create_my_key",
            &[("label", ""), ("expires_days", "")],
        )
        .await;
    let my_prefix = mine["prefix"].as_str().unwrap().to_string();
    assert_eq!(
        c.call(
            Some(&mia),
            "set_client_consent",
            &[("client", "acme"), ("model", "nope"), ("consent", "true")]
        )
        .await
        .0,
        400
    );
    c.ok(
        &admin,
        "remove_manager",
        &[("client", "acme"), ("username", "mia")],
    )
    .await;
    c.ok(
        &admin,
        "remove_manager",
        &[("client", "acme"), ("username", "mia")],
    )
    .await;
    // The command line on the host.
    let out = c.tollgate(&["keys", "create", "--client", "acme", "--label", "from cli"]);
    assert!(out.status.success(), "{out:?}");
    let cli_secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cli_prefix = app::domain::keys::display_prefix(&cli_secret);
    let out = c.tollgate(&["keys", "revoke", &cli_prefix]);
    assert!(out.status.success(), "{out:?}");

    let key_target = format!("key:{prefix} (client:acme)");
    let expected = vec![
        row("ada", "client_created", "client:acme", HERE, ""),
        row("ada", "manager_added", "client:acme", HERE, "manager: mia"),
        row("mia", "sign_in", "user:mia", HERE, ""),
        row("mia", "key_created", &key_target, HERE, "label: ci"),
        row("mia", "key_revoked", &key_target, HERE, ""),
        row("mia", "consent_given", "client:acme", HERE, "model: gray"),
        row("mia", "consent_revoked", "client:acme", HERE, "model: gray"),
        row("mia", "consent_given", "user:mia", HERE, "model: gray"),
        row(
            "mia",
            "key_created",
            &format!("key:{my_prefix} (user:mia)"),
            HERE,
            "",
        ),
        row(
            "ada",
            "manager_removed",
            "client:acme",
            HERE,
            "manager: mia",
        ),
        row(
            "cli",
            "key_created",
            &format!("key:{cli_prefix} (client:acme)"),
            "",
            "label: from cli",
        ),
        row(
            "cli",
            "key_revoked",
            &format!("key:{cli_prefix} (client:acme)"),
            "",
            "",
        ),
    ];
    assert_eq!(c.since(before).await, expected, "{backend:?}");
    // `tollgate create-admin` is recorded as the command line's.
    let out = std::process::Command::new(bin())
        .args(["create-admin", "root"])
        .arg("--config")
        .arg(&c.config)
        .arg("--database-url")
        .arg(&c.tdb.url)
        .env("TOLLGATE_ADMIN_PASSWORD", "a long admin password")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let last = c.since(c.last_seq().await - 1).await;
    assert_eq!(
        last,
        vec![row(
            "cli",
            "admin_created",
            "user:root",
            "",
            "tollgate create-admin"
        )]
    );
    assert!(c.verify().0);
}
on_backends!(client_actions_are_recorded, clients_story);

/// An action whose entry cannot be written still happens, and the failure
/// is in the log, never silent.
async fn failed_write_story(backend: Backend) {
    let c = console(backend).await;
    let admin = c.first_admin().await;
    c.sql("DELETE FROM audit_head").await;
    c.ok(&admin, "create_client", &[("name", "acme")]).await;
    assert!(
        app::ssr::owners::client_by_name(&c.db, "acme")
            .await
            .unwrap()
            .is_some(),
        "the action happened"
    );
    let log = c.log();
    assert!(
        log.contains("ERROR")
            && log.contains("the audit trail could not record this action")
            && log.contains("client:acme"),
        "{log}"
    );
    let (ok, out) = c.verify();
    assert!(!ok && out.contains("audit_head has no row"), "{out}");
}
on_backends!(a_failed_audit_write_is_logged, failed_write_story);

/// Edits, deletions and a cut tail are each named; an intact chain passes.
async fn verify_story(backend: Backend) {
    let c = TestApp::builder(backend)
        .config(CONFIG)
        .init_db()
        .build()
        .await;
    // init-db recorded the first apply.
    let first = c.trail().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].action, "config_reloaded");
    for i in 0..29 {
        let e = Entry::new(format!("user{i}"), Action::SignIn, format!("user:user{i}"))
            .addr("10.0.0.1");
        audit::append(&c.db, e).await.unwrap();
    }
    let (ok, out) = c.verify();
    assert!(
        ok && out.contains("audit chain intact: 30 entries"),
        "{out}"
    );

    // One field edited in place.
    let original = c.trail().await[16].detail.clone();
    c.sql("UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 17")
        .await;
    let (ok, out) = c.verify();
    assert!(!ok, "{out}");
    assert!(
        out.contains("entry 17: its hash does not match its contents (edited?)"),
        "{out}"
    );
    c.sql(&format!(
        "UPDATE audit_log SET detail = '{original}' WHERE seq = 17"
    ))
    .await;
    assert!(c.verify().0, "restored");

    // An actor edited and the row rehashed: the next entry's link breaks.
    let rows = c.trail().await;
    let r = &rows[9];
    let forged = app::ssr::audit::entry_hash(&app::domain::audit::Sealed {
        seq: r.seq,
        at_ms: r.at_ms,
        actor: "mallory",
        action: &r.action,
        target: &r.target,
        addr: &r.addr,
        detail: &r.detail,
        prev_hash: &r.prev_hash,
    });
    c.sql(&format!(
        "UPDATE audit_log SET actor = 'mallory', hash = '{forged}' WHERE seq = 10"
    ))
    .await;
    let (ok, out) = c.verify();
    assert!(
        !ok && out.contains("entry 11: its prev_hash does not match"),
        "{out}"
    );
    c.sql(&format!(
        "UPDATE audit_log SET actor = '{}', hash = '{}' WHERE seq = 10",
        r.actor, r.hash
    ))
    .await;
    assert!(c.verify().0);

    // A middle entry deleted.
    c.sql("DELETE FROM audit_log WHERE seq = 16").await;
    let (ok, out) = c.verify();
    assert!(!ok, "{out}");
    assert!(
        out.contains("entry 17 follows entry 15: entry 16 is missing"),
        "{out}"
    );

    // The tail cut off.
    let c = TestApp::builder(backend)
        .config(CONFIG)
        .init_db()
        .build()
        .await;
    for i in 0..5 {
        audit::append(&c.db, Entry::new("x", Action::SignOut, format!("user:{i}")))
            .await
            .unwrap();
    }
    c.sql("DELETE FROM audit_log WHERE seq >= 5").await;
    let (ok, out) = c.verify();
    assert!(!ok, "{out}");
    assert!(
        out.contains("entries 5 to 6 are missing (truncated?)"),
        "{out}"
    );
}
on_backends!(verify_names_the_first_broken_link, verify_story);

/// Twenty appends at once through two instances: no gap, an intact chain.
async fn parallel_story(backend: Backend) {
    let c = console(backend).await;
    let admin = c.first_admin().await;
    let second = c.spawn_instance();
    let before = c.last_seq().await;
    let calls = (0..20).map(|i| {
        let url = if i % 2 == 0 {
            c.url().to_string()
        } else {
            second.url.clone()
        };
        let (http, admin) = (c.http.clone(), admin.clone());
        async move {
            let name = format!("client-{i}");
            let (s, b, _) = call_on(
                &http,
                &url,
                Some(&admin),
                "create_client",
                &[("name", &name)],
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
    });
    futures::future::join_all(calls).await;
    let trail = c.trail().await;
    let seqs: Vec<i64> = trail.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=trail.len() as i64).collect::<Vec<_>>(),
        "no gaps"
    );
    let created = trail
        .iter()
        .filter(|e| e.seq > before && e.action == "client_created")
        .count();
    assert_eq!(created, 20, "{backend:?}");
    let (ok, out) = c.verify();
    assert!(ok, "{out}");
    drop(second);
}
on_backends!(parallel_appends_from_two_instances_chain, parallel_story);

/// A minimal RFC 4180 reader, to check the export as a spreadsheet would.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, ch) => cell.push(ch),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, ch) => cell.push(ch),
        }
    }
    assert!(
        cell.is_empty() && row.is_empty(),
        "the file ends with a line break"
    );
    rows
}

/// The page and the export: admins only, filters, pages, CSV quoting.
async fn page_and_csv_story(backend: Backend) {
    let c = console(backend).await;
    let admin = c.first_admin().await;
    for (name, role) in [("mia", "manager"), ("ulla", "user")] {
        c.ok(
            &admin,
            "create_user_account",
            &[
                ("username", name),
                ("role", role),
                ("password", "long enough pw"),
            ],
        )
        .await;
    }
    let mia = c.sign_in("mia", "long enough pw").await;
    let ulla = c.sign_in("ulla", "long enough pw").await;
    // Admins only: the server function, the export and the page.
    for (cookie, status) in [
        (None, 401),
        (Some(mia.as_str()), 403),
        (Some(ulla.as_str()), 403),
        (Some(admin.as_str()), 200),
    ] {
        assert_eq!(
            c.call(cookie, "audit_log", &[]).await.0,
            status,
            "{cookie:?}"
        );
        assert_eq!(
            c.get_text(cookie, "/audit.csv").await.0,
            status,
            "{cookie:?}"
        );
    }
    assert_eq!(c.get_text(Some(&mia), "/audit").await.0, 403);
    let (s, html) = c.get_text(Some(&admin), "/audit").await;
    assert_eq!(s, 200);
    assert!(html.contains("admin_created"), "the page lists entries");

    // Failed sign-ins with a name a spreadsheet or a CSV reader could trip on.
    let odd = "=x,\"y\"\nz";
    c.call(
        None,
        "login",
        &[("username", odd), ("password", "whatever pw")],
    )
    .await;
    for i in 0..120 {
        audit::append(
            &c.db,
            Entry::new("bot", Action::SignInFailed, format!("user:bot{i}")).addr("10.1.1.1"),
        )
        .await
        .unwrap();
    }

    // Pages of 50, newest first, the filter kept.
    let page = c.ok(&admin, "audit_log", &[("actor", "bot")]).await;
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0]["target"], "user:bot119");
    let older = page["older"].as_i64().unwrap().to_string();
    assert_eq!(page["newer"], Value::Null);
    let page2 = c
        .ok(&admin, "audit_log", &[("actor", "bot"), ("before", &older)])
        .await;
    assert_eq!(page2["rows"][0]["target"], "user:bot69");
    let older = page2["older"].as_i64().unwrap().to_string();
    let page3 = c
        .ok(&admin, "audit_log", &[("actor", "bot"), ("before", &older)])
        .await;
    assert_eq!(page3["rows"].as_array().unwrap().len(), 20);
    assert_eq!(page3["older"], Value::Null);
    let newer = page3["newer"].as_i64().unwrap().to_string();
    let back = c
        .ok(&admin, "audit_log", &[("actor", "bot"), ("after", &newer)])
        .await;
    assert_eq!(back["rows"], page2["rows"], "newer goes back a page");
    // Filters: action, target substring, dates.
    let p = c
        .ok(
            &admin,
            "audit_log",
            &[("action", "sign_in_failed"), ("target", "bot11")],
        )
        .await;
    let targets: Vec<&str> = p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "user:bot119",
            "user:bot118",
            "user:bot117",
            "user:bot116",
            "user:bot115",
            "user:bot114",
            "user:bot113",
            "user:bot112",
            "user:bot111",
            "user:bot110",
            "user:bot11"
        ]
    );
    let now = app::domain::time::rfc3339(app::ssr::now_ms());
    let today = &now[..10];
    let p = c
        .ok(
            &admin,
            "audit_log",
            &[("actor", "ada"), ("from", today), ("to", today)],
        )
        .await;
    assert!(!p["rows"].as_array().unwrap().is_empty());
    let p = c
        .ok(
            &admin,
            "audit_log",
            &[("actor", "ada"), ("to", "1999-12-31")],
        )
        .await;
    assert_eq!(p["rows"], serde_json::json!([]));
    let (s, b, _) = c
        .call(Some(&admin), "audit_log", &[("action", "drop_table")])
        .await;
    assert_eq!(s, 400, "{b}");
    // On the page, a bad filter is a message, not a blank page.
    let (s, html) = c.get_text(Some(&admin), "/audit?from=2026-13-01").await;
    assert_eq!(s, 400);
    assert!(
        html.contains("The from date must look like 2026-11-29.")
            && html.contains("Clear the filter"),
        "{html}"
    );

    // The export: every filtered entry, quoted and defused.
    let (s, csv) = c
        .get_text(Some(&admin), "/audit.csv?action=sign_in_failed")
        .await;
    assert_eq!(s, 200);
    let rows = parse_csv(&csv);
    assert_eq!(rows[0], app::domain::audit::CSV_HEADER.to_vec());
    assert_eq!(rows.len() - 1, 121, "{backend:?}");
    let odd_row = &rows[1];
    assert_eq!(odd_row[2], format!("'{odd}"), "the formula is defused");
    assert_eq!(odd_row[4], format!("user:{odd}"), "the target round-trips");
    let (_, all) = c.get_text(Some(&admin), "/audit.csv").await;
    let all = parse_csv(&all);
    assert_eq!(all.len() - 1, c.trail().await.len());
    let seqs: Vec<String> = c.trail().await.iter().map(|e| e.seq.to_string()).collect();
    assert_eq!(
        all[1..].iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        seqs
    );
    let (s, _) = c.get_text(Some(&admin), "/audit.csv?from=yesterday").await;
    assert_eq!(s, 400);
}
on_backends!(the_page_and_export_are_for_admins, page_and_csv_story);

/// `CONFIG` with a client entry and a model added, a model removed and both
/// defaults changed.
const CHANGED: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
  extra: { provider: dummy, price: { input: 1, output: 1 } }
clients:
  default:
    max: 10
    starting: 10
    model_access: { whitelist: [dummy] }
  acme:
    max: 20
    starting: 20
users:
  default:
    max: 6
    starting: 5
    model_access: { whitelist: [dummy] }
";

/// Editing the watched file records the new generation and what changed; a
/// broken file records the failure.
async fn reload_story(backend: Backend) {
    let c = console(backend).await;
    // A second instance watches the same file: both apply it, one records it.
    let second = c.spawn_instance();
    let before = c.last_seq().await;
    c.write_config(CHANGED);
    let t = &c;
    let entry = c
        .wait_for("a config_reloaded entry", || async move {
            t.since(before)
                .await
                .into_iter()
                .find(|e| e.1 == "config_reloaded")
        })
        .await;
    assert_eq!(
        entry,
        row(
            "config",
            "config_reloaded",
            "config",
            "",
            "generation 2: clients.acme added; clients.default changed; models.extra added; users.default changed; models.gray removed"
        ),
        "{backend:?}"
    );
    for s in [c.server(), &second] {
        s.wait_health(WAIT_LIMIT, |h| h["config"]["generation"] == 2)
            .await;
    }
    let reloads = c.since(before).await;
    assert_eq!(
        reloads.iter().filter(|e| e.1 == "config_reloaded").count(),
        1,
        "{reloads:?}"
    );
    drop(second);
    let before = c.last_seq().await;
    c.write_config("models: [not, a, map\n");
    let failed = c
        .wait_for("a config_reload_failed entry", || async move {
            t.since(before)
                .await
                .into_iter()
                .find(|e| e.1 == "config_reload_failed")
        })
        .await;
    assert_eq!(failed.0, "config");
    assert!(
        failed.4.starts_with("generation 2 stays in force: "),
        "{}",
        failed.4
    );
    assert!(!failed.4.contains('\n'), "{}", failed.4);
    assert!(c.verify().0);
}
on_backends!(config_reloads_are_recorded, reload_story);
