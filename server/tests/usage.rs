//! The usage explorer over real HTTP on both databases: the daily roll-up
//! stays equal to the ledger under load (and is backfilled by its
//! migration), managers see only their clients (page data, drill-down and
//! both CSV exports), plain users get 403, the CSVs parse and add up to the
//! ledger, and the drill-down lists exactly the ledger's rows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::outcome::CallOutcome;
use app::domain::pricing::Breakdown;
use app::domain::time::day_label;
use app::domain::time::DAY_MS;
use app::domain::usage::Usage;
use app::ssr::ledger::{self, Batch, Charge};
use app::ssr::owners::{self, OwnerKind};
use app::ssr::{db, keys, now_ms, pools};
use common::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{json, Value};

const CONFIG: &str = "\
models:
  small: { provider: dummy, price: { input: 1, output: 2 } }
  large: { provider: dummy, price: { input: 3, output: 5, request: 0.01 } }
  forbidden: { provider: dummy, price: { input: 1, output: 1 } }
clients:
  default:
    max: 1000
    starting: 1000
    model_access: { default: whitelist, blacklist: [forbidden] }
users:
  default:
    max: 1000
    starting: 1000
    model_access: { default: whitelist, blacklist: [forbidden] }
";

type Key = (i64, String, i64, String);
type Sums = [i64; 5];

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<(Key, Sums)> {
    let backend = db.get_database_backend();
    let mut out: Vec<(Key, Sums)> = db
        .query_all(Statement::from_string(backend, sql.to_string()))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let g = |i| r.try_get_by_index::<i64>(i).unwrap();
            let key = (
                g(0),
                r.try_get_by_index::<String>(1).unwrap(),
                g(2),
                r.try_get_by_index::<String>(3).unwrap(),
            );
            (key, [g(4), g(5), g(6), g(7), g(8)])
        })
        .collect();
    out.sort();
    out
}

/// The roll-up, and the same sums computed from the ledger itself.
async fn rollup_and_ledger(db: &DatabaseConnection) -> (Vec<(Key, Sums)>, Vec<(Key, Sums)>) {
    let rollup = rows(
        db,
        "SELECT day, owner_kind, owner_id, model, calls, refused, tokens_in, tokens_out, coins_micro \
         FROM usage_daily",
    )
    .await;
    let ledger = rows(
        db,
        "SELECT l.created_at / 86400000, p.owner_kind, p.owner_id, l.model, CAST(COUNT(*) AS BIGINT), \
         CAST(SUM(CASE WHEN l.code = 'refused' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(l.tokens_in) AS BIGINT), CAST(SUM(l.tokens_out) AS BIGINT), \
         CAST(SUM(l.coins_micro) AS BIGINT) \
         FROM ledger l JOIN pools p ON p.id = l.pool_id \
         GROUP BY l.created_at / 86400000, p.owner_kind, p.owner_id, l.model",
    )
    .await;
    (rollup, ledger)
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let backend = db.get_database_backend();
    db.query_one(Statement::from_string(backend, sql.to_string()))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

/// Ledger rows for a pool written the way the gateway's writer does, at `at`.
async fn write_rows(db: &DatabaseConnection, pool_id: i64, at: i64, rows: &[(&str, i64, bool)]) {
    let charges = rows
        .iter()
        .enumerate()
        .map(|(i, &(model, coins, refused))| Charge {
            pool_id,
            lease_id: None,
            key_id: None,
            model: model.into(),
            usage: Usage {
                input: 10 + i as u64,
                output: 5,
                ..Usage::default()
            },
            lines: Breakdown::default(),
            coins,
            cost: coins,
            overage: 0,
            request_id: format!("t-{pool_id}-{at}-{i}"),
            deployment: String::new(),
            code: if refused {
                CallOutcome::Refused
            } else {
                CallOutcome::Ok
            },
            detail: String::new(),
        })
        .collect();
    let batch = Batch {
        charges,
        ..Batch::default()
    };
    let txn = db::begin_write(db).await.unwrap();
    ledger::apply_batch(&txn, "test", &batch, at).await.unwrap();
    txn.commit().await.unwrap();
}

/// A small deterministic generator, so a failing load can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

async fn one_call(app: &TestApp, key: &str, model: &str, stream: bool) {
    let body = json!({"model": model, "stream": stream, "max_tokens": 20,
        "messages": [{"role": "user", "content": "count the words in this prompt"}]});
    let resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    assert!(
        status == 200 || (model == "forbidden" && (400..500).contains(&status)),
        "{model}: {status}"
    );
}

async fn rollup_story(backend: Backend) {
    let names = ["alpha", "beta", "gamma"];
    let mut app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&names)
        .keys(&names)
        .build()
        .await;
    let loaded = app.load_config();
    let mut all_keys: Vec<String> = names.iter().map(|n| app.keys[*n].clone()).collect();
    for user in ["ulla", "uwe"] {
        let u = owners::create_user(&app.db, &loaded.config, user, "x", "user", now_ms())
            .await
            .unwrap();
        let k = keys::create(&app.db, OwnerKind::User, u.id, "t", None, None, now_ms())
            .await
            .unwrap();
        all_keys.push(k.secret);
    }
    // Earlier days, written as the gateway's writer writes them.
    let beta = app.pool("beta").await.id;
    for days_ago in [1, 3, 40] {
        let at = now_ms() - days_ago * DAY_MS;
        write_rows(
            &app.db,
            beta,
            at,
            &[("small", 1_000, false), ("large", 0, true)],
        )
        .await;
    }
    app.start();

    let models = ["small", "large", "forbidden"];
    let mut rng = Lcg(0x5eed_0013);
    let mut sent = 0;
    for _ in 0..12 {
        let calls: Vec<(String, &str, bool)> = (0..8)
            .map(|_| {
                let key = all_keys[rng.next(all_keys.len() as u64) as usize].clone();
                (key, models[rng.next(3) as usize], rng.next(3) == 0)
            })
            .collect();
        sent += calls.len();
        futures::future::join_all(calls.iter().map(|(k, m, s)| one_call(&app, k, m, *s))).await;
    }
    // An orphaned lease, charged in full by the sweep.
    let alpha = app.pool("alpha").await.id;
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO leases (pool_id, holder, unlimited, amount_micro, created_at, renewed_at) \
             VALUES ({alpha}, 'gone', false, 4000000, 0, 0)"
        ))
        .await
        .unwrap();
    // The server sweeps too, every half minute: whichever sweeps it, once.
    ledger::sweep_orphans(&app.db, now_ms()).await.unwrap();

    let expected = (sent + 6 + 1) as i64;
    let db = &app.db;
    app.wait_for("every call's ledger row", || async move {
        (scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger").await == expected).then_some(())
    })
    .await;
    let (rollup, from_ledger) = rollup_and_ledger(&app.db).await;
    assert_eq!(rollup, from_ledger, "{backend:?}");
    let refused: i64 = rollup.iter().map(|(_, s)| s[1]).sum();
    let streamed_or_not = rollup.iter().filter(|(k, _)| k.1 == "user").count();
    assert!(refused > 3, "{backend:?}: refusals are in the load");
    assert!(
        streamed_or_not > 0,
        "{backend:?}: users' calls are in the load"
    );
    assert!(
        rollup
            .iter()
            .any(|(k, s)| k.3.is_empty() && s[4] == 4_000_000),
        "{backend:?}: the orphaned lease's charge is rolled up"
    );
}
on_backends!(rollup_equals_the_ledger_after_a_random_load, rollup_story);

/// The migration rolls up the rows already in the ledger.
async fn backfill_story(backend: Backend) {
    use migration::{Migrator, MigratorTrait};
    let tdb = TestDb::new(backend).await;
    let conn = tdb.connect().await;
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261129_000012_usage_daily")
        .unwrap();
    Migrator::up(&conn, Some(before as u32)).await.unwrap();
    conn.execute_unprepared(
        "INSERT INTO pools (owner_kind, owner_id, max_micro, unlimited, refresh_micro, balance_micro, refilled_at, updated_at) \
         VALUES ('client', 7, 0, false, 0, 0, 0, 0), ('user', 7, 0, false, 0, 0, 0, 0)",
    )
    .await
    .unwrap();
    let mut values = Vec::new();
    for i in 0..40i64 {
        let pool = 1 + i % 2;
        let model = ["m1", "m2", "m3"][(i % 3) as usize];
        let code = if i % 5 == 0 { "refused" } else { "ok" };
        let at = 1_700_000_000_000 + i * 7_200_000;
        values.push(format!(
            "({pool}, '{model}', {i}, {}, {}, {at}, 'r{i}', '', '{code}')",
            2 * i,
            i * 1000
        ));
    }
    conn.execute_unprepared(&format!(
        "INSERT INTO ledger (pool_id, model, tokens_in, tokens_out, coins_micro, created_at, request_id, outcome, code) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    Migrator::up(&conn, None).await.unwrap();
    let (rollup, from_ledger) = rollup_and_ledger(&conn).await;
    assert!(rollup.len() > 6, "{backend:?}: {rollup:?}");
    assert_eq!(rollup, from_ledger, "{backend:?}");
}
on_backends!(migration_backfills_the_rollup, backfill_story);

// ---- the console: sessions, server functions, pages and CSV ----

async fn call(
    app: &TestApp,
    cookie: Option<&str>,
    name: &str,
    form: &[(&str, &str)],
) -> (u16, Value, Vec<String>) {
    call_on(&app.http, app.url(), cookie, name, form).await
}

async fn sign_in(app: &TestApp, user: &str, password: &str) -> String {
    let (status, body, cookies) = call(
        app,
        None,
        "login",
        &[("username", user), ("password", password)],
    )
    .await;
    assert_eq!(status, 200, "login {user}: {body}");
    cookies
        .iter()
        .find(|c| c.starts_with("tg_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn get(app: &TestApp, cookie: Option<&str>, path: &str) -> (u16, String) {
    let mut req = app.http.get(format!("{}{path}", app.url()));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A CSV document (RFC 4180) as rows of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(
        !quoted && cell.is_empty() && row.is_empty(),
        "the CSV ends with a line break"
    );
    rows
}

/// A coin amount as written (`1.5`) in micro-coins, exactly.
fn micro(coins: &str) -> i64 {
    let (whole, frac) = coins.split_once('.').unwrap_or((coins, ""));
    assert!(frac.len() <= 6, "{coins}");
    let sign = if whole.starts_with('-') { -1 } else { 1 };
    let w: i64 = whole.trim_start_matches('-').parse().unwrap();
    let f: i64 = format!("{frac:0<6}").parse().unwrap();
    sign * (w * 1_000_000 + f)
}

/// A CSV's column `name`, for every data row.
fn column<'a>(rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = rows[0].iter().position(|h| h == name).unwrap();
    rows[1..].iter().map(|r| r[i].as_str()).collect()
}

/// The console's cast: an admin, a manager of alpha, a plain user; ledger
/// rows over three days for alpha (enough for two drill-down pages), beta
/// and the user.
struct Cast {
    app: TestApp,
    admin: String,
    mia: String,
    ulla: String,
    from: String,
    to: String,
}

async fn cast(backend: Backend) -> Cast {
    let mut app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["alpha", "beta"])
        .build()
        .await;
    let out = std::process::Command::new(bin())
        .args(["create-admin", "root", "--config"])
        .arg(&app.config)
        .args(["--database-url", &app.tdb.url])
        .env("TOLLGATE_ADMIN_PASSWORD", "root password 1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    app.start();
    let admin = sign_in(&app, "root", "root password 1").await;
    for (name, role) in [("mia", "manager"), ("ulla", "user")] {
        let form = [
            ("username", name),
            ("role", role),
            ("password", "long enough pw"),
        ];
        let (s, b, _) = call(&app, Some(admin.as_str()), "create_user_account", &form).await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b, _) = call(
        &app,
        Some(admin.as_str()),
        "add_manager",
        &[("client", "alpha"), ("username", "mia")],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (alpha, beta) = (app.pool("alpha").await.id, app.pool("beta").await.id);
    let ulla_id = owners::user_by_name(&app.db, "ulla")
        .await
        .unwrap()
        .unwrap()
        .id;
    let ulla_pool = pools::find(&app.db, OwnerKind::User, ulla_id)
        .await
        .unwrap()
        .unwrap()
        .id;
    let today = now_ms() / DAY_MS;
    for days_ago in [0, 1, 2] {
        let at = now_ms() - days_ago * DAY_MS;
        let many: Vec<(&str, i64, bool)> = (0..25)
            .map(|i| {
                (
                    if i % 2 == 0 { "small" } else { "large" },
                    1_000 + i,
                    i % 7 == 0,
                )
            })
            .collect();
        write_rows(&app.db, alpha, at, &many).await;
        write_rows(
            &app.db,
            beta,
            at,
            &[("large", 7_000_000, false), ("=1+2", 0, true)],
        )
        .await;
        write_rows(&app.db, ulla_pool, at, &[("small", 500_000, false)]).await;
    }
    // Outside the range asked for: must not count.
    write_rows(
        &app.db,
        beta,
        now_ms() - 10 * DAY_MS,
        &[("large", 99_000_000, false)],
    )
    .await;
    let mia = sign_in(&app, "mia", "long enough pw").await;
    let ulla = sign_in(&app, "ulla", "long enough pw").await;
    Cast {
        app,
        admin,
        mia,
        ulla,
        from: day_label(today - 5),
        to: day_label(today),
    }
}

impl Cast {
    async fn report(&self, cookie: &str, group: &str) -> (u16, Value) {
        let form = [
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("group", group),
        ];
        let (s, b, _) = call(&self.app, Some(cookie), "usage_report", &form).await;
        (s, b)
    }

    /// Every call of a drill-down, following its pages; ids, newest first.
    async fn drill(
        &self,
        cookie: &str,
        group: &str,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<i64>, u16> {
        let mut ids = Vec::new();
        let mut before = String::new();
        loop {
            let mut form = vec![("from", from), ("to", to), ("group", group), ("name", name)];
            if !before.is_empty() {
                form.push(("before", before.as_str()));
            }
            let (s, b, _) = call(&self.app, Some(cookie), "usage_calls", &form).await;
            if s != 200 {
                return Err(s);
            }
            let rows = b["rows"].as_array().unwrap();
            assert!(rows.len() <= 50, "a page holds at most 50 calls");
            ids.extend(rows.iter().map(|r| r["id"].as_i64().unwrap()));
            match b["next"].as_str() {
                Some(n) => before = n.to_string(),
                None => return Ok(ids),
            }
        }
    }

    /// Ledger ids of a pool within the cast's range, newest first.
    async fn ledger_ids(&self, pool_id: i64, from: &str, to: &str) -> Vec<i64> {
        let start = app::domain::time::parse_day(from).unwrap() * DAY_MS;
        let end = (app::domain::time::parse_day(to).unwrap() + 1) * DAY_MS;
        let backend = self.app.db.get_database_backend();
        self.app
            .db
            .query_all(Statement::from_string(
                backend,
                format!(
                    "SELECT id FROM ledger WHERE pool_id = {pool_id} AND created_at >= {start} \
                     AND created_at < {end} ORDER BY created_at DESC, id DESC"
                ),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<i64>(0).unwrap())
            .collect()
    }

    fn csv_path(&self, path: &str, group: &str, extra: &str) -> String {
        format!(
            "{path}?from={}&to={}&group={group}{extra}",
            self.from, self.to
        )
    }
}

async fn scoping_story(backend: Backend) {
    let c = cast(backend).await;
    let app = &c.app;
    // The admin sees every client; the manager only alpha, in every grouping.
    let (s, all) = c.report(&c.admin, "client").await;
    assert_eq!(s, 200, "{all}");
    let labels = |v: &Value| -> Vec<String> {
        v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["label"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(labels(&all), vec!["beta", "alpha"], "{backend:?}");
    let alpha_coins = scalar(
        &app.db,
        &format!(
            "SELECT CAST(SUM(coins_micro) AS BIGINT) FROM ledger WHERE pool_id = {}",
            app.pool("alpha").await.id
        ),
    )
    .await;
    for group in ["client", "model"] {
        let (s, mine) = c.report(&c.mia, group).await;
        assert_eq!(s, 200, "{mine}");
        assert_eq!(
            mine["total"]["coins"].as_i64().unwrap(),
            alpha_coins,
            "{backend:?} {group}"
        );
        assert_eq!(mine["total"]["calls"], 75, "{backend:?} {group}");
    }
    let (_, mine) = c.report(&c.mia, "client").await;
    assert_eq!(labels(&mine), vec!["alpha"], "{backend:?}");
    let (_, users) = c.report(&c.mia, "user").await;
    assert_eq!(
        users["total"]["calls"], 0,
        "{backend:?}: managers see no user's usage"
    );
    let (_, users) = c.report(&c.admin, "user").await;
    assert_eq!(labels(&users), vec!["ulla"], "{backend:?}");

    // A plain user: 403 everywhere; nobody signed in: 401.
    let (s, _) = c.report(&c.ulla, "client").await;
    assert_eq!(s, 403, "{backend:?}");
    assert_eq!(
        get(app, Some(c.ulla.as_str()), "/usage").await.0,
        403,
        "{backend:?}"
    );
    let (s, _, _) = call(
        app,
        Some(c.ulla.as_str()),
        "usage_calls",
        &[("group", "user"), ("name", "ulla")],
    )
    .await;
    assert_eq!(s, 403, "{backend:?}");
    for path in ["/usage.csv", "/usage/calls.csv"] {
        assert_eq!(
            get(app, Some(c.ulla.as_str()), path).await.0,
            403,
            "{backend:?} {path}"
        );
        assert_eq!(get(app, None, path).await.0, 401, "{backend:?} {path}");
    }

    // Another client's name gives 404, not its data, in the drill-down and the export.
    assert_eq!(
        c.drill(&c.mia, "client", "beta", &c.from, &c.to).await,
        Err(404)
    );
    assert_eq!(
        c.drill(&c.mia, "user", "ulla", &c.from, &c.to).await,
        Err(404)
    );
    assert_eq!(
        c.drill(&c.mia, "client", "nobody", &c.from, &c.to).await,
        Err(404)
    );
    let (s, body) = get(
        app,
        Some(c.mia.as_str()),
        &c.csv_path("/usage/calls.csv", "client", "&name=beta"),
    )
    .await;
    assert_eq!((s, body.contains("large")), (404, false), "{backend:?}");
    // By model, a manager's calls are their clients' only.
    let (s, body) = get(
        app,
        Some(c.mia.as_str()),
        &c.csv_path("/usage/calls.csv", "model", "&name=large"),
    )
    .await;
    assert_eq!(s, 200);
    let csv = parse_csv(&body);
    assert!(
        csv.len() > 1 && column(&csv, "owner").iter().all(|o| *o == "alpha"),
        "{backend:?}: {body}"
    );
    let (_, body) = get(
        app,
        Some(c.mia.as_str()),
        &c.csv_path("/usage.csv", "client", ""),
    )
    .await;
    let csv = parse_csv(&body);
    assert_eq!(
        column(&csv, "client")
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        ["alpha"].into(),
        "{backend:?}"
    );

    // The page as served: the admin's shows both clients, the manager's only alpha.
    let (s, html) = get(
        app,
        Some(c.admin.as_str()),
        &c.csv_path("/usage", "client", ""),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        html.contains("data-testid=\"top-spenders\"") && html.contains("data-group=\"beta\""),
        "{backend:?}"
    );
    let (s, html) = get(
        app,
        Some(c.mia.as_str()),
        &c.csv_path("/usage", "client", ""),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        html.contains("data-group=\"alpha\"") && !html.contains("beta"),
        "{backend:?}"
    );
    assert!(
        html.contains("href=\"/usage\""),
        "{backend:?}: the nav links the explorer"
    );
}
on_backends!(managers_see_only_their_clients, scoping_story);

async fn drill_and_csv_story(backend: Backend) {
    let c = cast(backend).await;
    let app = &c.app;
    // The drill-down lists exactly the ledger's rows, over two pages, newest first.
    let alpha = app.pool("alpha").await.id;
    let listed = c
        .drill(&c.mia, "client", "alpha", &c.from, &c.to)
        .await
        .unwrap();
    assert_eq!(listed.len(), 75, "{backend:?}");
    assert_eq!(
        listed,
        c.ledger_ids(alpha, &c.from, &c.to).await,
        "{backend:?}"
    );
    // One day of it.
    let day = day_label(now_ms() / DAY_MS - 1);
    let one_day = c
        .drill(&c.admin, "client", "alpha", &day, &day)
        .await
        .unwrap();
    assert_eq!(
        one_day,
        c.ledger_ids(alpha, &day, &day).await,
        "{backend:?}"
    );
    assert_eq!(one_day.len(), 25, "{backend:?}");

    // Both exports parse, and their coins add up to the ledger's over the range.
    let start = app::domain::time::parse_day(&c.from).unwrap() * DAY_MS;
    let in_range = format!("FROM ledger WHERE created_at >= {start}");
    let coins = scalar(
        &app.db,
        &format!("SELECT CAST(SUM(coins_micro) AS BIGINT) {in_range}"),
    )
    .await;
    let count = scalar(
        &app.db,
        &format!("SELECT CAST(COUNT(*) AS BIGINT) {in_range}"),
    )
    .await;
    for group in ["client", "user", "model"] {
        let (s, body) = get(
            app,
            Some(c.admin.as_str()),
            &c.csv_path("/usage.csv", group, ""),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let csv = parse_csv(&body);
        assert_eq!(
            csv[0],
            [
                "day",
                group,
                "calls",
                "refused",
                "tokens_in",
                "tokens_out",
                "coins"
            ]
        );
        assert!(csv.iter().all(|r| r.len() == 7), "{backend:?}");
        let sum: i64 = column(&csv, "coins").into_iter().map(micro).sum();
        let calls: i64 = column(&csv, "calls")
            .into_iter()
            .map(|n| n.parse::<i64>().unwrap())
            .sum();
        if group == "model" {
            assert_eq!((sum, calls), (coins, count), "{backend:?}");
            assert!(
                column(&csv, "model").contains(&"'=1+2"),
                "{backend:?}: a formula is defused"
            );
        }
    }
    let (s, body) = get(
        app,
        Some(c.admin.as_str()),
        &c.csv_path("/usage/calls.csv", "model", ""),
    )
    .await;
    assert_eq!(s, 200);
    let csv = parse_csv(&body);
    assert!(csv.iter().all(|r| r.len() == 13), "{backend:?}");
    assert_eq!(csv.len() as i64 - 1, count, "{backend:?}");
    assert_eq!(
        column(&csv, "coins").into_iter().map(micro).sum::<i64>(),
        coins,
        "{backend:?}"
    );
    assert!(column(&csv, "model").contains(&"'=1+2"), "{backend:?}");

    // Bounded input: a reversed or too long range, an unknown grouping, a forged cursor.
    for (path, status) in [
        ("/usage.csv?from=2026-02-01&to=2026-01-01", 400),
        ("/usage.csv?from=2020-01-01&to=2026-01-01", 400),
        ("/usage.csv?group=owner", 400),
        ("/usage.csv?from=yesterday", 400),
        ("/usage/calls.csv?group=client&name=../../etc", 404),
    ] {
        assert_eq!(
            get(app, Some(c.admin.as_str()), path).await.0,
            status,
            "{backend:?} {path}"
        );
    }
    let (s, _, _) = call(
        app,
        Some(c.admin.as_str()),
        "usage_calls",
        &[("group", "model"), ("before", "x.y")],
    )
    .await;
    assert_eq!(s, 400, "{backend:?}");
    let (s, b, _) = call(
        app,
        Some(c.admin.as_str()),
        "usage_report",
        &[("from", "2026-02-30")],
    )
    .await;
    assert_eq!(s, 400, "{backend:?}: {b}");
    // The page shows a refusal as a message, with the form to fix it.
    let (s, html) = get(
        app,
        Some(c.admin.as_str()),
        "/usage?from=2026-02-01&to=2026-01-01",
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        html.contains("role=\"alert\"") && html.contains("usage-form"),
        "{backend:?}"
    );
    let (s, html) = get(
        app,
        Some(c.admin.as_str()),
        &c.csv_path("/usage/calls", "client", "&name=alpha"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        html.contains("data-testid=\"older\""),
        "{backend:?}: a second page is linked"
    );
}
on_backends!(drill_down_and_csv_match_the_ledger, drill_and_csv_story);
