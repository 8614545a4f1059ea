//! Budget alerts in the database (`domain::alerts` has the rules).
//!
//! [`scan`] looks at every limited pool, and when its alert state moves,
//! moves it with a conditional UPDATE (`WHERE fired_percent = old`): of two
//! instances scanning the same pool, exactly one wins, and only the winner
//! queues the alert's deliveries, in the same transaction. Deliveries wait
//! in the `alert_deliveries` outbox; [`claim_due`] hands each due one to a
//! single instance at a time (another conditional UPDATE), and the sender
//! records the outcome. Secrets never reach the database: the sender looks
//! up the target's secret in the config in force when it sends.

use super::db;
use super::entities::{alert_delivery, alert_state};
use super::AppContext;
use crate::domain::alerts::{retries_left, retry_delay_ms, step, used_micro, Step};
use crate::domain::config::{AlertSettings, PoolLimit};
use crate::domain::pool::{refilled, PoolState};
use crate::domain::time::rfc3339;
use crate::view::{AlertDeliveryRow, AlertsReport};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// How long a claimed delivery belongs to the instance that claimed it.
/// Longer than a send may take, so a live sender is never overtaken; if
/// the sender dies, another instance tries again after it.
pub const CLAIM_MS: i64 = 30_000;

/// How many recent deliveries `/config` shows.
pub const RECENT: u64 = 50;

/// Finished deliveries are kept this long.
pub const KEEP_MS: i64 = 30 * crate::domain::time::DAY_MS;

/// One watched pool, as the scan reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub pool_id: i64,
    pub owner_kind: String,
    pub owner_name: String,
    pub max_micro: i64,
    pub used_micro: i64,
    /// The stored state; `None` when the pool has none yet (nothing fired).
    pub fired: Option<u8>,
}

/// Every limited pool with a positive `max`, with what it has used at
/// `now` (refill credited, leases counted as not used) and its alert
/// state, read in one statement.
pub async fn watched_pools<C: ConnectionTrait>(c: &C, now: i64) -> Result<Vec<Watched>, DbErr> {
    let sql = "SELECT p.id, p.owner_kind, p.max_micro, p.refresh_micro, p.balance_micro, \
         p.refilled_at, p.held_micro, \
         CAST(COALESCE((SELECT SUM(l.amount_micro) FROM leases l \
         WHERE l.pool_id = p.id AND l.unlimited = p.unlimited), 0) AS BIGINT) AS leased, \
         COALESCE(c.name, u.username, '') AS owner_name, a.fired_percent \
         FROM pools p \
         LEFT JOIN clients c ON p.owner_kind = 'client' AND c.id = p.owner_id \
         LEFT JOIN users u ON p.owner_kind = 'user' AND u.id = p.owner_id \
         LEFT JOIN alert_states a ON a.pool_id = p.id \
         WHERE NOT p.unlimited AND p.max_micro > 0";
    let rows = c
        .query_all(Statement::from_string(c.get_database_backend(), sql))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let max: i64 = row.try_get_by_index(2)?;
        let state = PoolState {
            limit: PoolLimit::Limited(max),
            refresh_micro: row.try_get_by_index(3)?,
            balance: row.try_get_by_index(4)?,
            refilled_at: row.try_get_by_index(5)?,
            held: row.try_get_by_index(6)?,
        };
        let leased: i64 = row.try_get_by_index(7)?;
        let fired: Option<i64> = row.try_get_by_index(9)?;
        out.push(Watched {
            pool_id: row.try_get_by_index(0)?,
            owner_kind: row.try_get_by_index(1)?,
            owner_name: row.try_get_by_index(8)?,
            max_micro: max,
            used_micro: used_micro(max, refilled(&state, now).balance, leased),
            fired: fired.map(|f| u8::try_from(f.clamp(0, 100)).unwrap_or(0)),
        });
    }
    Ok(out)
}

/// Looks at every watched pool once; returns how many deliveries it queued.
pub async fn scan(
    db: &DatabaseConnection,
    settings: &AlertSettings,
    now: i64,
) -> Result<usize, DbErr> {
    let mut queued = 0;
    for w in watched_pools(db, now).await? {
        let old = w.fired.unwrap_or(0);
        let s = step(&settings.thresholds, old, w.used_micro, w.max_micro);
        if s.changes(old) {
            queued += advance(db, &w, &s, settings, now).await?;
        }
    }
    Ok(queued)
}

/// Moves one pool's state from what the scan read to `s.fired`, and queues
/// one delivery per alert and target, if this instance is the one that
/// moved it. Returns the deliveries queued (0 if another instance won).
async fn advance(
    db: &DatabaseConnection,
    w: &Watched,
    s: &Step,
    settings: &AlertSettings,
    now: i64,
) -> Result<usize, DbErr> {
    let txn = db::begin_write(db).await?;
    if w.fired.is_none() {
        alert_state::Entity::insert(alert_state::ActiveModel {
            pool_id: Set(w.pool_id),
            fired_percent: Set(0),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(alert_state::Column::PoolId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    }
    let moved = alert_state::Entity::update_many()
        .col_expr(
            alert_state::Column::FiredPercent,
            Expr::value(i64::from(s.fired)),
        )
        .col_expr(alert_state::Column::UpdatedAt, Expr::value(now))
        .filter(alert_state::Column::PoolId.eq(w.pool_id))
        .filter(alert_state::Column::FiredPercent.eq(i64::from(w.fired.unwrap_or(0))))
        .exec(&txn)
        .await?;
    if moved.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(0);
    }
    let mut rows = Vec::new();
    for &threshold in &s.fire {
        for target in &settings.webhooks {
            rows.push(delivery(w, threshold, &target.url, now)?);
        }
    }
    let queued = rows.len();
    if !rows.is_empty() {
        alert_delivery::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    if queued > 0 {
        tracing::info!(
            owner = %format!("{} {}", w.owner_kind, w.owner_name),
            thresholds = ?s.fire,
            "budget alert queued for {queued} deliveries"
        );
    }
    Ok(queued)
}

/// A new delivery id: `dlv_` and 128 random bits in hex.
fn new_id() -> Result<String, DbErr> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| DbErr::Custom(format!("no randomness: {e}")))?;
    Ok(format!(
        "dlv_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// The JSON body of one alert, exactly as it is signed and sent.
pub fn body(id: &str, w: &Watched, threshold: u8, now: i64) -> String {
    serde_json::json!({
        "event": "budget.threshold",
        "id": id,
        "owner": {"kind": w.owner_kind, "name": w.owner_name},
        "threshold_percent": threshold,
        "used_micro": w.used_micro,
        "max_micro": w.max_micro,
        "at": rfc3339(now),
    })
    .to_string()
}

fn delivery(
    w: &Watched,
    threshold: u8,
    url: &str,
    now: i64,
) -> Result<alert_delivery::ActiveModel, DbErr> {
    let id = new_id()?;
    Ok(alert_delivery::ActiveModel {
        body: Set(body(&id, w, threshold, now)),
        id: Set(id),
        created_at: Set(now),
        pool_id: Set(w.pool_id),
        owner_kind: Set(w.owner_kind.clone()),
        owner_name: Set(w.owner_name.clone()),
        threshold_percent: Set(i64::from(threshold)),
        target_url: Set(url.to_string()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        status: Set(PENDING.to_string()),
        last_error: Set(None),
        finished_at: Set(None),
    })
}

/// Claims up to `limit` due deliveries for this instance: each one is
/// taken by a conditional UPDATE that only one instance can win, which
/// counts the attempt and holds the row for [`CLAIM_MS`]. Returns the rows
/// as claimed (`attempts` already counts this one).
pub async fn claim_due(
    db: &DatabaseConnection,
    now: i64,
    limit: u64,
) -> Result<Vec<alert_delivery::Model>, DbErr> {
    use alert_delivery::Column;
    let due = alert_delivery::Entity::find()
        .filter(Column::Status.eq(PENDING))
        .filter(Column::NextAttemptAt.lte(now))
        .order_by_asc(Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await?;
    let mut claimed = Vec::with_capacity(due.len());
    for d in due {
        let until = now.saturating_add(CLAIM_MS);
        let r = alert_delivery::Entity::update_many()
            .col_expr(Column::Attempts, Expr::value(d.attempts + 1))
            .col_expr(Column::NextAttemptAt, Expr::value(until))
            .filter(Column::Id.eq(d.id.as_str()))
            .filter(Column::Status.eq(PENDING))
            .filter(Column::Attempts.eq(d.attempts))
            .filter(Column::NextAttemptAt.eq(d.next_attempt_at))
            .exec(db)
            .await?;
        if r.rows_affected == 1 {
            claimed.push(alert_delivery::Model {
                attempts: d.attempts + 1,
                next_attempt_at: until,
                ..d
            });
        }
    }
    Ok(claimed)
}

/// Records a 2xx answer to a claimed delivery.
pub async fn record_delivered(
    db: &DatabaseConnection,
    d: &alert_delivery::Model,
    now: i64,
) -> Result<(), DbErr> {
    use alert_delivery::Column;
    alert_delivery::Entity::update_many()
        .col_expr(Column::Status, Expr::value(DELIVERED))
        .col_expr(Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(Column::LastError, Expr::value(Option::<String>::None))
        .filter(Column::Id.eq(d.id.as_str()))
        .filter(Column::Status.eq(PENDING))
        .exec(db)
        .await?;
    Ok(())
}

/// Records a failed attempt of a claimed delivery: another attempt after
/// the backoff, or `failed` once it has had its attempts. `retry` says
/// whether trying again can help (not for a target no longer configured).
pub async fn record_failure(
    db: &DatabaseConnection,
    d: &alert_delivery::Model,
    error: &str,
    retry: bool,
    retry_base_ms: i64,
    now: i64,
) -> Result<(), DbErr> {
    use alert_delivery::Column;
    let error: String = error.chars().take(300).collect();
    let mut q = alert_delivery::Entity::update_many()
        .col_expr(Column::LastError, Expr::value(Some(error)))
        .filter(Column::Id.eq(d.id.as_str()))
        .filter(Column::Status.eq(PENDING))
        .filter(Column::Attempts.eq(d.attempts));
    q = if retry && retries_left(d.attempts) {
        let next = now.saturating_add(retry_delay_ms(d.attempts, retry_base_ms));
        q.col_expr(Column::NextAttemptAt, Expr::value(next))
    } else {
        q.col_expr(Column::Status, Expr::value(FAILED))
            .col_expr(Column::FinishedAt, Expr::value(Some(now)))
    };
    q.exec(db).await?;
    Ok(())
}

/// The most recent deliveries, newest first.
pub async fn recent<C: ConnectionTrait>(
    c: &C,
    limit: u64,
) -> Result<Vec<alert_delivery::Model>, DbErr> {
    alert_delivery::Entity::find()
        .order_by_desc(alert_delivery::Column::CreatedAt)
        .order_by_asc(alert_delivery::Column::ThresholdPercent)
        .limit(limit)
        .all(c)
        .await
}

/// Deletes finished deliveries created before `before`; returns how many.
pub async fn purge(db: &DatabaseConnection, before: i64) -> Result<u64, DbErr> {
    use alert_delivery::Column;
    let r = alert_delivery::Entity::delete_many()
        .filter(Column::Status.ne(PENDING))
        .filter(Column::CreatedAt.lt(before))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

/// The alerts part of `/config`: targets (URLs only), thresholds and the
/// recent deliveries.
pub async fn overview(ctx: &AppContext) -> Result<AlertsReport, DbErr> {
    let snapshot = ctx.config.load();
    let alerts = snapshot.config.alerts.as_ref();
    let rows = recent(&ctx.db, RECENT).await?;
    Ok(AlertsReport {
        configured: alerts.is_some(),
        targets: alerts
            .map(|a| a.webhooks.iter().map(|w| w.url.clone()).collect())
            .unwrap_or_default(),
        thresholds: alerts.map(|a| a.thresholds.clone()).unwrap_or_default(),
        deliveries: rows
            .into_iter()
            .map(|d| AlertDeliveryRow {
                id: d.id,
                created_at: d.created_at,
                owner: format!("{} {}", d.owner_kind, d.owner_name),
                threshold_percent: d.threshold_percent,
                target: d.target_url,
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use crate::ssr::config_file::parse;

    fn with_secret(name: &str) {
        // Names are unique per test, so tests running at once do not race.
        std::env::set_var(name, "s3cret-value");
    }

    #[test]
    fn alerts_are_read_with_defaults_and_the_secret_from_the_environment() {
        with_secret("TG_TEST_HOOK_A");
        let l = parse(
            "t.yaml",
            "alerts:\n  webhooks:\n    - url: https://hooks.example.com/tollgate\n      secret_env: TG_TEST_HOOK_A\n",
        )
        .unwrap();
        let a = l.config.alerts.unwrap();
        assert_eq!(a.thresholds, [50, 80, 100]);
        assert_eq!(a.webhooks[0].url, "https://hooks.example.com/tollgate");
        assert_eq!(a.webhooks[0].secret.expose(), b"s3cret-value");
        // The secret shows in neither Debug nor the serialized config.
        let shown = format!("{a:?}{}", serde_json::to_string(&a).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(parse("t.yaml", "clients:\n")
            .unwrap()
            .config
            .alerts
            .is_none());
        let l = parse(
            "t.yaml",
            "alerts:\n  thresholds: [25, 90]\n  webhooks: [{ url: 'http://127.0.0.1:9/x', secret_env: TG_TEST_HOOK_A }]\n",
        )
        .unwrap();
        assert_eq!(l.config.alerts.unwrap().thresholds, [25, 90]);
    }

    #[test]
    fn a_bad_alerts_section_names_its_line_and_field() {
        with_secret("TG_TEST_HOOK_B");
        std::env::set_var("TG_TEST_HOOK_EMPTY", "");
        let hook = |url: &str, env: &str| {
            format!("alerts:\n  webhooks:\n    - url: {url}\n      secret_env: {env}\n")
        };
        let cases: Vec<(String, usize, &str, &str)> = vec![
            (
                hook("ftp://x", "TG_TEST_HOOK_B"),
                3,
                "alerts.webhooks[0].url",
                "http:// or https://",
            ),
            (
                hook("'https://'", "TG_TEST_HOOK_B"),
                3,
                "alerts.webhooks[0].url",
                "name a host",
            ),
            (
                hook("https://a.example", "TG_TEST_HOOK_UNSET_XYZ"),
                4,
                "alerts.webhooks[0].secret_env",
                "`TG_TEST_HOOK_UNSET_XYZ` is not set",
            ),
            (
                hook("https://a.example", "TG_TEST_HOOK_EMPTY"),
                4,
                "alerts.webhooks[0].secret_env",
                "is empty",
            ),
            (
                hook("https://a.example", "'BAD NAME'"),
                4,
                "alerts.webhooks[0].secret_env",
                "not an environment variable name",
            ),
            (
                format!(
                    "{}  thresholds: [50, 0]\n",
                    hook("https://a.example", "TG_TEST_HOOK_B")
                ),
                5,
                "alerts.thresholds[1]",
                "from 1 to 100",
            ),
            (
                format!(
                    "{}  thresholds: [50, 101]\n",
                    hook("https://a.example", "TG_TEST_HOOK_B")
                ),
                5,
                "alerts.thresholds[1]",
                "from 1 to 100",
            ),
            (
                format!(
                    "{}  thresholds: [50.5]\n",
                    hook("https://a.example", "TG_TEST_HOOK_B")
                ),
                5,
                "alerts.thresholds[0]",
                "whole percentage",
            ),
            (
                format!(
                    "{}  colour: red\n",
                    hook("https://a.example", "TG_TEST_HOOK_B")
                ),
                5,
                "alerts.colour",
                "unknown field `colour`",
            ),
            (
                format!(
                    "{}      retries: 3\n",
                    hook("https://a.example", "TG_TEST_HOOK_B")
                ),
                5,
                "alerts.webhooks[0].retries",
                "unknown field `retries`",
            ),
        ];
        for (yaml, line, path, says) in cases {
            let e = parse("t.yaml", &yaml).expect_err(&yaml);
            assert_eq!((e.line, e.path.as_str()), (Some(line), path), "{yaml}: {e}");
            assert!(e.to_string().contains(says), "{yaml}: {e}");
            assert!(e.to_string().starts_with(&format!("t.yaml:{line}:")), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        // Whole-list rules: they name the list.
        for (tail, path, says) in [
            ("  thresholds: [80, 50]\n", "alerts.thresholds", "ascending"),
            ("  thresholds: [50, 50]\n", "alerts.thresholds", "twice"),
            ("  thresholds: []\n", "alerts.thresholds", "at least one"),
            (
                "    - url: https://a.example\n      secret_env: TG_TEST_HOOK_B\n",
                "alerts.webhooks",
                "listed twice",
            ),
        ] {
            let yaml = format!("{}{tail}", hook("https://a.example", "TG_TEST_HOOK_B"));
            let e = parse("t.yaml", &yaml).expect_err(&yaml);
            assert_eq!(e.path, path, "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
        let e = parse("t.yaml", "alerts:\n  webhooks: []\n").unwrap_err();
        assert!(e.to_string().contains("give 1 to 10 webhooks"), "{e}");
        let many: String = (0..11)
            .map(|i| {
                format!("    - {{ url: 'https://h{i}.example', secret_env: TG_TEST_HOOK_B }}\n")
            })
            .collect();
        let e = parse("t.yaml", &format!("alerts:\n  webhooks:\n{many}")).unwrap_err();
        assert!(e.to_string().contains("got 11"), "{e}");
        let e = parse("t.yaml", "alerts:\n  thresholds: [50]\n").unwrap_err();
        assert!(e.to_string().contains("missing field `webhooks`"), "{e}");
    }
}
