//! init-db and sync against real SQLite and PostgreSQL databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use app::domain::money::MICRO;
use app::ssr::entities::{access_policy, config_state, pool};
use app::ssr::owners::{create_client, OwnerKind};
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

async fn client_pool(db: &DatabaseConnection, name: &str) -> pool::Model {
    let c = app::ssr::owners::client_by_name(db, name)
        .await
        .unwrap()
        .unwrap();
    pools::find(db, OwnerKind::Client, c.id)
        .await
        .unwrap()
        .unwrap()
}

async fn client_policy(db: &DatabaseConnection, name: &str) -> access_policy::Model {
    let c = app::ssr::owners::client_by_name(db, name)
        .await
        .unwrap()
        .unwrap();
    use sea_orm::{ColumnTrait, QueryFilter};
    access_policy::Entity::find()
        .filter(access_policy::Column::OwnerKind.eq("client"))
        .filter(access_policy::Column::OwnerId.eq(c.id))
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn init_db_applies_the_seed_examples_skips_unknown_names_and_is_idempotent() {
    for backend in BACKENDS {
        let tdb = TestDb::new(backend).await;
        let cfg = tdb.dir.path().join("tollgate.yaml");
        // First the defaults only; clients are created (as the UI does) afterwards.
        write(&cfg, "clients:\n  default:\n    max: 1\n    starting: 1\n");
        init_db(&cfg, &tdb.url);
        let db = tdb.connect().await;
        let loaded = load(&cfg);
        for name in ["research-bot", "other"] {
            create_client(&db, &loaded.config, name, None, now_ms())
                .await
                .unwrap();
        }
        assert_eq!(client_pool(&db, "research-bot").await.max_micro, MICRO);

        // Now the user's per-client example, plus an entry for a client that does not exist.
        write(
            &cfg,
            &format!("{SEED_OVERRIDES}  ghost-client:\n    max: 9\n"),
        );
        let stderr = init_db(&cfg, &tdb.url);
        assert!(
            !stderr.contains("ghost-client"),
            "{backend:?}: unknown names are skipped silently: {stderr}"
        );

        let bot = client_pool(&db, "research-bot").await;
        assert_eq!(
            (bot.max_micro, bot.unlimited, bot.refresh_micro),
            (500 * MICRO, false, MICRO),
            "{backend:?}"
        );
        assert_eq!(
            bot.balance_micro, MICRO,
            "{backend:?}: starting applies only to new pools"
        );
        let bot_policy = client_policy(&db, "research-bot").await;
        assert_eq!(bot_policy.source, "named");
        assert_eq!(bot_policy.default_mode, "whitelist");
        assert_eq!(
            bot_policy.whitelist,
            r#"["gpt-4o","llama3","qwen3.5-9b-q5"]"#
        );
        let other = client_pool(&db, "other").await;
        assert_eq!(
            (other.max_micro, other.refresh_micro),
            (100 * MICRO, 50_000),
            "{backend:?}"
        );
        let other_policy = client_policy(&db, "other").await;
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
        init_db(&cfg, &tdb.url);
        init_db(&cfg, &tdb.url);
        assert_eq!(
            dump(&db).await,
            before,
            "{backend:?}: init-db is idempotent"
        );
        assert_eq!(before.2.unwrap().generation, 2);
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn new_pools_start_with_starting_and_named_entries_inherit_nothing() {
    for backend in BACKENDS {
        let tdb = TestDb::new(backend).await;
        let cfg = tdb.dir.path().join("tollgate.yaml");
        write(
            &cfg,
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
        );
        init_db(&cfg, &tdb.url);
        let db = tdb.connect().await;
        let loaded = load(&cfg);
        for name in ["plain", "only-max", "rich"] {
            create_client(&db, &loaded.config, name, None, now_ms())
                .await
                .unwrap();
        }
        let plain = client_pool(&db, "plain").await;
        assert_eq!(
            (plain.max_micro, plain.refresh_micro, plain.balance_micro),
            (100 * MICRO, 5 * MICRO, 40 * MICRO)
        );
        let only_max = client_pool(&db, "only-max").await;
        assert_eq!(
            (
                only_max.max_micro,
                only_max.refresh_micro,
                only_max.balance_micro
            ),
            (7 * MICRO, 0, 0),
            "{backend:?}"
        );
        let p = client_policy(&db, "only-max").await;
        assert_eq!(
            (p.default_mode.as_str(), p.whitelist.as_str()),
            ("blacklist", "[]"),
            "{backend:?}: no model_access denies all"
        );
        assert_eq!(
            client_pool(&db, "rich").await.balance_micro,
            10 * MICRO,
            "starting is clamped to max"
        );

        // Lowering max clamps; raising starting leaves existing pools alone.
        write(
            &cfg,
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
        init_db(&cfg, &tdb.url);
        let plain = client_pool(&db, "plain").await;
        assert_eq!(
            (plain.max_micro, plain.balance_micro),
            (30 * MICRO, 30 * MICRO),
            "{backend:?}"
        );
        let rich = client_pool(&db, "rich").await;
        assert!(rich.unlimited, "{backend:?}");
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_duplicate_or_reserved_client_name_is_refused() {
    for backend in BACKENDS {
        let tdb = TestDb::new(backend).await;
        let cfg = tdb.dir.path().join("tollgate.yaml");
        write(&cfg, "clients:\n  default:\n    max: 1\n");
        init_db(&cfg, &tdb.url);
        let db = tdb.connect().await;
        let loaded = load(&cfg);
        create_client(&db, &loaded.config, "app", None, now_ms())
            .await
            .unwrap();
        let dup = create_client(&db, &loaded.config, "app", None, now_ms())
            .await
            .unwrap_err();
        assert!(dup.to_string().contains("already exists"), "{dup}");
        let reserved = create_client(&db, &loaded.config, "default", None, now_ms())
            .await
            .unwrap_err();
        assert!(reserved.to_string().contains("reserved"), "{reserved}");
        db.close().await.unwrap();
    }
}

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
