//! init-db and sync against real SQLite and PostgreSQL databases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::money::MICRO;
use app::ssr::entities::{access_policy, config_state, pool};
use app::ssr::owners::create_client;
use app::ssr::{now_ms, pools};
use common::*;
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};

async fn dump(
    db: &DatabaseConnection,
) -> (
    Vec<pool::Model>,
    Vec<access_policy::Model>,
    Option<config_state::Model>,
) {
    (
        pool::Entity::find()
            .order_by_asc(pool::Column::Id)
            .all(db)
            .await
            .unwrap(),
        access_policy::Entity::find()
            .order_by_asc(access_policy::Column::Id)
            .all(db)
            .await
            .unwrap(),
        config_state::Entity::find_by_id(1).one(db).await.unwrap(),
    )
}

async fn client_policy(app: &TestApp, name: &str) -> access_policy::Model {
    use sea_orm::{ColumnTrait, QueryFilter};
    access_policy::Entity::find()
        .filter(access_policy::Column::OwnerKind.eq("client"))
        .filter(access_policy::Column::OwnerId.eq(app.client_id(name)))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

async fn init_db_story(backend: Backend) {
    // First the defaults only; clients are created (as the UI does) afterwards.
    let app = TestApp::builder(backend)
        .config("clients:\n  default:\n    max: 1\n    starting: 1\n")
        .clients(&["research-bot", "other"])
        .build()
        .await;
    let db = app.db.clone();
    assert_eq!(app.pool("research-bot").await.max_micro, MICRO);

    // Now the user's per-client example, plus an entry for a client that does not exist.
    app.write_config(&format!("{SEED_OVERRIDES}  ghost-client:\n    max: 9\n"));
    let stderr = app.init_db();
    assert!(
        !stderr.contains("ghost-client"),
        "{backend:?}: unknown names are skipped silently: {stderr}"
    );

    let bot = app.pool("research-bot").await;
    assert_eq!(
        (bot.max_micro, bot.unlimited, bot.refresh_micro),
        (500 * MICRO, false, MICRO),
        "{backend:?}"
    );
    assert_eq!(
        bot.balance_micro, MICRO,
        "{backend:?}: starting applies only to new pools"
    );
    let bot_policy = client_policy(&app, "research-bot").await;
    assert_eq!(bot_policy.source, "named");
    assert_eq!(bot_policy.default_mode, "whitelist");
    assert_eq!(
        bot_policy.whitelist,
        r#"["gpt-4o","llama3","qwen3.5-9b-q5"]"#
    );
    let other = app.pool("other").await;
    assert_eq!(
        (other.max_micro, other.refresh_micro),
        (100 * MICRO, 50_000),
        "{backend:?}"
    );
    let other_policy = client_policy(&app, "other").await;
    assert_eq!(
        (
            other_policy.source.as_str(),
            other_policy.default_mode.as_str(),
            other_policy.whitelist.as_str()
        ),
        ("default", "blacklist", "[]")
    );
    let (pools_n, _, _) = dump(&db).await;
    assert_eq!(pools_n.len(), 2, "{backend:?}: no pool for the ghost entry");

    // Running it again changes nothing at all.
    let before = dump(&db).await;
    app.init_db();
    app.init_db();
    assert_eq!(
        dump(&db).await,
        before,
        "{backend:?}: init-db is idempotent"
    );
    assert_eq!(before.2.unwrap().generation, 2);
    app.db.close().await.unwrap();
}
on_backends!(
    init_db_applies_the_seed_examples_skips_unknown_names_and_is_idempotent,
    init_db_story
);

async fn new_pools_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(
            "\
clients:
  default:
    max: 100
    refresh: 5
    starting: 40
    model_access: { default: whitelist }
  only-max:
    max: 7
  rich:
    max: 10
    starting: 500
",
        )
        .clients(&["plain", "only-max", "rich"])
        .build()
        .await;
    let plain = app.pool("plain").await;
    assert_eq!(
        (plain.max_micro, plain.refresh_micro, plain.balance_micro),
        (100 * MICRO, 5 * MICRO, 40 * MICRO)
    );
    let only_max = app.pool("only-max").await;
    assert_eq!(
        (
            only_max.max_micro,
            only_max.refresh_micro,
            only_max.balance_micro
        ),
        (7 * MICRO, 0, 0),
        "{backend:?}"
    );
    let p = client_policy(&app, "only-max").await;
    assert_eq!(
        (p.default_mode.as_str(), p.whitelist.as_str()),
        ("blacklist", "[]"),
        "{backend:?}: no model_access denies all"
    );
    assert_eq!(
        app.pool("rich").await.balance_micro,
        10 * MICRO,
        "starting is clamped to max"
    );

    // Lowering max clamps; raising starting leaves existing pools alone.
    app.write_config(
        "\
clients:
  default:
    max: 30
    refresh: 5
    starting: 90
    model_access: { default: whitelist }
  only-max:
    max: 7
  rich:
    max: -2
",
    );
    app.init_db();
    let plain = app.pool("plain").await;
    assert_eq!(
        (plain.max_micro, plain.balance_micro),
        (30 * MICRO, 30 * MICRO),
        "{backend:?}"
    );
    let rich = app.pool("rich").await;
    assert!(rich.unlimited, "{backend:?}");
    app.db.close().await.unwrap();
}
on_backends!(
    new_pools_start_with_starting_and_named_entries_inherit_nothing,
    new_pools_story
);

async fn duplicate_name_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config("clients:\n  default:\n    max: 1\n")
        .clients(&["app"])
        .build()
        .await;
    let (db, loaded) = (app.db.clone(), app.load_config());
    let dup = create_client(&db, &loaded.config, "app", None, now_ms())
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("already exists"), "{dup}");
    let reserved = create_client(&db, &loaded.config, "default", None, now_ms())
        .await
        .unwrap_err();
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
    app.db.close().await.unwrap();
}
on_backends!(
    a_duplicate_or_reserved_client_name_is_refused,
    duplicate_name_story
);

#[tokio::test]
async fn check_config_reports_errors_with_location_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    write(
        &cfg,
        "clients:\n  default:\n    max: 1\n    model_access:\n      default: maybe\n",
    );
    let out = tollgate(&["check-config"], &cfg, "sqlite::memory:");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yaml:5:16: clients.default.model_access.default:"),
        "{stderr}"
    );

    write(&cfg, "models:\n  dummy: { provider: dummy, price: { input: 0, output: 0 } }\nclients:\n  default:\n    max: 1\n    model_access: { whitelist: [nope] }\n");
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("`nope` is not in the `models` catalog"),
        "{stderr}"
    );
}

use std::process::Command;

/// The lease transactions on their own: every batch keeps
/// `balance + Σ lease + Σ ledger` unchanged, and the odd cases (a lease swept
/// under its holder, a pool that changed kind) are answered, not guessed.
async fn lease_batches_story(backend: Backend) {
    use app::ssr::db::begin_write;
    use app::ssr::entities::{lease, ledger as ledger_rows};
    use app::ssr::ledger::{apply_batch, Batch, Charge, Return, TopUp, TopUpOutcome};

    async fn run(db: &DatabaseConnection, holder: &str, batch: Batch) -> Vec<TopUpOutcome> {
        let txn = begin_write(db).await.unwrap();
        let out = apply_batch(&txn, holder, &batch, now_ms()).await.unwrap();
        txn.commit().await.unwrap();
        out
    }
    async fn books(db: &DatabaseConnection, pool_id: i64) -> (i64, i64, i64) {
        let p = pool::Entity::find_by_id(pool_id)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        let leased: i64 = lease::Entity::find()
            .all(db)
            .await
            .unwrap()
            .iter()
            .filter(|l| l.pool_id == pool_id)
            .map(|l| l.amount_micro)
            .sum();
        let spent: i64 = ledger_rows::Entity::find()
            .all(db)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.pool_id == pool_id)
            .map(|r| r.coins_micro)
            .sum();
        (p.balance_micro, leased, spent)
    }
    let top_up = |pool_id, lease_id, needed| TopUp {
        pool_id,
        lease_id,
        needed,
        per_call: needed,
        want: 32 * needed,
        unlimited: false,
    };
    let charge = |pool_id, lease_id, coins, id: &str| Charge {
        pool_id,
        lease_id,
        key_id: None,
        model: "dummy".into(),
        usage: app::domain::usage::Usage {
            input: 1,
            output: 1,
            ..Default::default()
        },
        lines: app::domain::pricing::Breakdown {
            input: coins,
            ..Default::default()
        },
        coins,
        cost: coins,
        overage: 0,
        request_id: id.into(),
        deployment: String::new(),
        code: app::domain::outcome::CallOutcome::Ok,
        detail: String::new(),
    };

    let app = TestApp::builder(backend)
        .config("clients:\n  default:\n    max: 100\n    starting: 100\n")
        .clients(&["app"])
        .build()
        .await;
    let db = app.db.clone();
    let p = app.pool("app").await;
    let total = 100 * MICRO;

    // A chunk: 32 calls' worth, well under half of the pool.
    let out = run(
        &db,
        "a",
        Batch {
            top_ups: vec![top_up(p.id, None, MICRO)],
            ..Default::default()
        },
    )
    .await;
    let TopUpOutcome::Granted {
        lease_id,
        amount,
        exact,
    } = out[0].clone()
    else {
        panic!("{backend:?}: {out:?}")
    };
    assert_eq!((amount, exact), (32 * MICRO, false), "{backend:?}");
    assert_eq!(books(&db, p.id).await, (68 * MICRO, 32 * MICRO, 0));
    assert_eq!(
        pools::current(&db, &p, now_ms()).await.unwrap().balance,
        total
    );

    // Another holder cannot touch this lease.
    let out = run(
        &db,
        "b",
        Batch {
            top_ups: vec![top_up(p.id, Some(lease_id), MICRO)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out, vec![TopUpOutcome::LeaseGone], "{backend:?}");

    // Charge 3, give back the other 29 and close.
    run(
        &db,
        "a",
        Batch {
            charges: vec![charge(p.id, Some(lease_id), 3 * MICRO, "r1")],
            returns: vec![Return {
                lease_id,
                pool_id: p.id,
                amount: 29 * MICRO,
                credit: true,
                close: true,
            }],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        books(&db, p.id).await,
        (97 * MICRO, 0, 3 * MICRO),
        "{backend:?}"
    );
    assert!(
        lease::Entity::find().all(&db).await.unwrap().is_empty(),
        "closed"
    );

    // The closed lease is gone; a row written for it later carries no coins.
    let out = run(
        &db,
        "a",
        Batch {
            top_ups: vec![top_up(p.id, Some(lease_id), MICRO)],
            charges: vec![charge(p.id, Some(lease_id), 5 * MICRO, "late")],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out, vec![TopUpOutcome::LeaseGone]);
    let late = ledger_rows::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request_id == "late")
        .unwrap();
    assert_eq!(late.coins_micro, 0);
    assert!(late.outcome.contains("already charged"), "{}", late.outcome);

    // The pool is limited, so an unlimited-kind lease is stale.
    let mut t = top_up(p.id, None, MICRO);
    t.unlimited = true;
    assert_eq!(
        run(
            &db,
            "a",
            Batch {
                top_ups: vec![t],
                ..Default::default()
            }
        )
        .await,
        vec![TopUpOutcome::Stale]
    );

    // Nearly empty: 97 coins is less than 64 calls of 2, so exactly one call's worth.
    let out = run(
        &db,
        "a",
        Batch {
            top_ups: vec![top_up(p.id, None, 2 * MICRO), top_up(p.id, None, 2 * MICRO)],
            ..Default::default()
        },
    )
    .await;
    let (
        TopUpOutcome::Granted {
            lease_id: l1,
            amount: a1,
            exact: true,
        },
        TopUpOutcome::Granted {
            lease_id: l2,
            amount: a2,
            exact: true,
        },
    ) = (out[0].clone(), out[1].clone())
    else {
        panic!("{backend:?}: {out:?}")
    };
    assert_eq!((a1, a2), (2 * MICRO, 2 * MICRO));
    assert_eq!(l1, l2, "one new lease per pool in a batch");
    assert_eq!(books(&db, p.id).await, (93 * MICRO, 4 * MICRO, 3 * MICRO));

    // More than the pool holds.
    let out = run(
        &db,
        "a",
        Batch {
            top_ups: vec![top_up(p.id, Some(l1), 94 * MICRO)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        out,
        vec![TopUpOutcome::Insufficient {
            balance: 93 * MICRO
        }]
    );
    let (balance, leased, spent) = books(&db, p.id).await;
    assert_eq!(
        balance + leased + spent,
        total,
        "{backend:?}: nothing created or lost"
    );
}
on_backends!(lease_batches_keep_the_books_balanced, lease_batches_story);

/// Upgrading a database from the first schema: reservations still open are
/// charged at their reserved amount (the old orphan rule) before the table
/// goes, so an upgrade loses no charge.
async fn upgrade_story(backend: Backend) {
    use app::ssr::entities::ledger;
    use migration::{Migrator, MigratorTrait};
    use sea_orm::ConnectionTrait;
    // An empty database: no init-db, no server.
    let app = TestApp::builder(backend).build().await;
    let db = app.db.clone();
    Migrator::up(&db, Some(1)).await.unwrap();
    db.execute_unprepared(
        "INSERT INTO reservations (request_id, pool_id, key_id, model, amount_micro, created_at) \
             VALUES ('req_open', 7, NULL, 'dummy', 2500000, 1000)",
    )
    .await
    .unwrap();
    Migrator::up(&db, None).await.unwrap();
    let rows = ledger::Entity::find().all(&db).await.unwrap();
    assert_eq!(rows.len(), 1, "{backend:?}");
    assert_eq!(
        (
            rows[0].request_id.as_str(),
            rows[0].pool_id,
            rows[0].coins_micro
        ),
        ("req_open", 7, 2_500_000)
    );
    assert_eq!(rows[0].code, "orphaned_lease");
    assert_eq!(
        (
            rows[0].cached_in,
            rows[0].reasoning_out,
            rows[0].input_micro
        ),
        (0, 0, 0),
        "{backend:?}: rows from before the breakdown have zeros in it"
    );
    // The breakdown's columns come off and back on (SQLite drops columns one by one).
    Migrator::down(&db, Some(1)).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(ledger::Entity::find().all(&db).await.unwrap().len(), 1);
    assert!(
        db.execute_unprepared("SELECT 1 FROM reservations")
            .await
            .is_err(),
        "{backend:?}: the reservations table is gone"
    );
    // Ledger request ids may repeat now (a caller may reuse its x-request-id).
    for _ in 0..2 {
        db.execute_unprepared(
                "INSERT INTO ledger (pool_id, key_id, model, tokens_in, tokens_out, coins_micro, created_at, request_id, outcome) \
                 VALUES (7, NULL, 'dummy', 0, 0, 0, 1, 'same', 'ok')",
            )
            .await
            .unwrap();
    }
}
on_backends!(
    upgrading_charges_open_reservations_and_drops_the_table,
    upgrade_story
);
