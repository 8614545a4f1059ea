//! The accountant in-process against a real database: a temp SQLite file,
//! and a fresh PostgreSQL database per test. Every story runs on both.

use super::*;
use app::domain::outcome::CallOutcome;
use app::ssr::entities::ledger as ledger_rows;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// A bound on waits that should end at once; never reached when all is well.
const FLUSH_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated, empty database, removed when dropped.
struct TestDb {
    db: DatabaseConnection,
    _dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_name) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/tollgate.db", dir.path().display()),
                None,
            ),
            Backend::Postgres => {
                let mut bytes = [0u8; 6];
                getrandom::fill(&mut bytes).unwrap();
                let name = format!(
                    "tg_u_{}",
                    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                let admin = db::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {PG_ADMIN_URL} is required for these tests: {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        let db = db::connect(&url).await.unwrap();
        db::migrate(&db).await.unwrap();
        TestDb {
            db,
            _dir: dir,
            pg_name,
        }
    }

    /// A limited pool holding `balance` of at most `max`, without refill.
    async fn pool(&self, owner_id: i64, max: i64, balance: i64) -> pool::Model {
        let now = now_ms();
        let res = pool::Entity::insert(pool::ActiveModel {
            owner_kind: Set("client".into()),
            owner_id: Set(owner_id),
            max_micro: Set(max),
            unlimited: Set(false),
            refresh_micro: Set(0),
            balance_micro: Set(balance),
            refilled_at: Set(now),
            updated_at: Set(now),
            held_micro: Set(0),
            ..Default::default()
        })
        .exec(&self.db)
        .await
        .unwrap();
        pool::Entity::find_by_id(res.last_insert_id)
            .one(&self.db)
            .await
            .unwrap()
            .unwrap()
    }

    /// What the pool can spend, counting what leases hold for it.
    async fn balance(&self, p: &pool::Model) -> i64 {
        pools::current(&self.db, p, now_ms()).await.unwrap().balance
    }

    async fn rows(&self, p: &pool::Model) -> Vec<ledger_rows::Model> {
        ledger_rows::Entity::find()
            .filter(ledger_rows::Column::PoolId.eq(p.id))
            .all(&self.db)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = db::connect(PG_ADMIN_URL).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

fn call(request_id: &str) -> CallInfo {
    CallInfo {
        request_id: request_id.into(),
        key_id: None,
        model: "m".into(),
        deployment: String::new(),
    }
}

fn served(cost: i64) -> Outcome {
    Outcome {
        usage: app::domain::usage::Usage {
            input: 3,
            output: 5,
            ..Default::default()
        },
        lines: app::domain::pricing::Breakdown {
            input: cost,
            ..Default::default()
        },
        cost,
        code: CallOutcome::Ok,
        detail: String::new(),
    }
}

async fn admitted(acc: &Accountant, p: &pool::Model, amount: i64, id: &str) -> Ticket {
    match acc.admit(p, amount, &call(id)).await.unwrap() {
        Admission::Admitted(t) => t,
        other => panic!("expected {id} to be admitted, got {other:?}"),
    }
}

/// Each story as `<story>_sqlite` and `<story>_postgres`.
macro_rules! on_backends {
    ($story:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $story(Backend::Sqlite).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $story(Backend::Postgres).await
        }
    };
}

on_backends!(
    settle_charges_the_actual_cost,
    settle_charges_the_actual_cost_sqlite,
    settle_charges_the_actual_cost_postgres
);
async fn settle_charges_the_actual_cost(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 10_000_000, 10_000_000).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    let ticket = admitted(&acc, &p, 1_000, "r1").await;
    assert_eq!(ticket.settle(served(600)), 600);
    acc.flush(FLUSH_LIMIT).await;
    let rows = t.rows(&p).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.request_id, "r1");
    assert_eq!((row.tokens_in, row.tokens_out), (3, 5));
    assert_eq!(row.coins_micro, 600);
    assert_eq!(row.cost_micro, 600);
    assert_eq!(row.overage_micro, 0);
    assert_eq!(t.balance(&p).await, 10_000_000 - 600);
    assert_eq!(acc.overage(), (0, 0));
}

on_backends!(
    the_ledger_keeps_usage_and_cost_line_by_line,
    the_ledger_keeps_usage_and_cost_line_by_line_sqlite,
    the_ledger_keeps_usage_and_cost_line_by_line_postgres
);
async fn the_ledger_keeps_usage_and_cost_line_by_line(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 10_000_000, 10_000_000).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    let price = Price {
        input_micro: 3_000,
        output_micro: 15_000,
        request_micro: 7,
        cached_input_micro: 300,
        cache_write_micro: 3_750,
    };
    let usage = Usage {
        input: 10,
        cached_input: 200,
        cache_write: 40,
        output: 30,
        reasoning: 12,
    };
    let ticket = admitted(&acc, &p, 1_000, "r1").await;
    assert_eq!(
        ticket.settle(Outcome::priced(&price, usage, CallOutcome::Ok)),
        30 + 60 + 150 + 450 + 7
    );
    acc.flush(FLUSH_LIMIT).await;
    let rows = t.rows(&p).await;
    let r = &rows[0];
    assert_eq!(
        (r.tokens_in, r.cached_in, r.cache_write_in),
        (250, 200, 40),
        "tokens_in counts every input token"
    );
    assert_eq!((r.tokens_out, r.reasoning_out), (30, 12));
    assert_eq!(
        (
            r.input_micro,
            r.cached_input_micro,
            r.cache_write_micro,
            r.output_micro,
            r.request_micro
        ),
        (30, 60, 150, 450, 7)
    );
    assert_eq!(
        (r.cost_micro, r.coins_micro, r.overage_micro),
        (697, 697, 0)
    );
}

on_backends!(
    a_pool_too_small_is_insufficient,
    a_pool_too_small_is_insufficient_sqlite,
    a_pool_too_small_is_insufficient_postgres
);
async fn a_pool_too_small_is_insufficient(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 1_000_000, 500).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    let refused = acc.admit(&p, 1_000, &call("r1")).await.unwrap();
    assert!(
        matches!(refused, Admission::Insufficient { balance: 500 }),
        "{refused:?}"
    );
    // Nothing was taken: the whole balance still serves a call that fits.
    let ticket = admitted(&acc, &p, 500, "r2").await;
    assert_eq!(ticket.settle(served(500)), 500);
    acc.flush(FLUSH_LIMIT).await;
    assert_eq!(t.balance(&p).await, 0);
}

on_backends!(
    a_blocked_pool_is_blocked,
    a_blocked_pool_is_blocked_sqlite,
    a_blocked_pool_is_blocked_postgres
);
async fn a_blocked_pool_is_blocked(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 0, 0).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    let refused = acc.admit(&p, 1_000, &call("r1")).await.unwrap();
    assert!(matches!(refused, Admission::Blocked), "{refused:?}");
    // Blocked in the database since the caller read the pool: the top-up says so.
    let stale = pool::Model {
        max_micro: 1_000_000,
        balance_micro: 1_000_000,
        ..p.clone()
    };
    let refused = acc.admit(&stale, 1_000, &call("r2")).await.unwrap();
    assert!(matches!(refused, Admission::Blocked), "{refused:?}");
    acc.flush(FLUSH_LIMIT).await;
    assert!(t.rows(&p).await.is_empty());
}

on_backends!(
    a_dropped_ticket_is_charged_its_reservation,
    a_dropped_ticket_is_charged_its_reservation_sqlite,
    a_dropped_ticket_is_charged_its_reservation_postgres
);
async fn a_dropped_ticket_is_charged_its_reservation(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 10_000_000, 10_000_000).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    drop(admitted(&acc, &p, 1_000, "r1").await);
    acc.flush(FLUSH_LIMIT).await;
    let rows = t.rows(&p).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].coins_micro, 1_000);
    assert_eq!(rows[0].code, "abandoned", "{}", rows[0].outcome);
    assert_eq!(t.balance(&p).await, 10_000_000 - 1_000);
}

on_backends!(
    usage_above_the_reservation_is_charged_as_far_as_it_goes,
    usage_above_the_reservation_is_charged_as_far_as_it_goes_sqlite,
    usage_above_the_reservation_is_charged_as_far_as_it_goes_postgres
);
async fn usage_above_the_reservation_is_charged_as_far_as_it_goes(backend: Backend) {
    let t = TestDb::new(backend).await;
    let acc = Accountant::start(t.db.clone(), Default::default());

    // A full pool: the lease holds a chunk, and covers the excess itself.
    let full = t.pool(1, 10_000_000, 10_000_000).await;
    let ticket = admitted(&acc, &full, 1_000, "full").await;
    assert_eq!(ticket.settle(served(3_000)), 3_000);

    // A nearly empty pool: the lease holds only the reservation, so the
    // excess comes from the pool, as far as it goes and never below zero.
    let small = t.pool(2, 10_000_000, 2_000).await;
    let ticket = admitted(&acc, &small, 1_000, "small").await;
    assert_eq!(ticket.settle(served(5_000)), 1_000);

    acc.flush(FLUSH_LIMIT).await;
    let rows = t.rows(&full).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].coins_micro,
            rows[0].cost_micro,
            rows[0].overage_micro
        ),
        (3_000, 3_000, 2_000)
    );
    assert_eq!(t.balance(&full).await, 10_000_000 - 3_000);
    let rows = t.rows(&small).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].coins_micro,
            rows[0].cost_micro,
            rows[0].overage_micro
        ),
        (2_000, 5_000, 4_000)
    );
    assert_eq!(t.balance(&small).await, 0);
    assert_eq!(acc.overage(), (2, 6_000));
}

on_backends!(
    flush_makes_queued_rows_visible,
    flush_makes_queued_rows_visible_sqlite,
    flush_makes_queued_rows_visible_postgres
);
async fn flush_makes_queued_rows_visible(backend: Backend) {
    let t = TestDb::new(backend).await;
    let p = t.pool(1, 10_000_000, 10_000_000).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    let tickets = [
        admitted(&acc, &p, 1_000, "r1").await,
        admitted(&acc, &p, 1_000, "r2").await,
    ];
    for ticket in tickets {
        ticket.settle(served(700));
    }
    acc.refuse(p.id, &call("r3"), "over the rate limit");
    acc.flush(FLUSH_LIMIT).await;
    assert_eq!(acc.unwritten_rows(), 0);
    let mut rows = t.rows(&p).await;
    rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let seen: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.request_id.as_str(), r.coins_micro))
        .collect();
    assert_eq!(seen, [("r1", 700), ("r2", 700), ("r3", 0)]);
    assert_eq!(
        (rows[2].code.as_str(), rows[2].outcome.as_str()),
        ("refused", "over the rate limit")
    );
    assert_eq!(t.balance(&p).await, 10_000_000 - 1_400);
}

on_backends!(
    concurrent_admits_never_take_more_than_the_pool_holds,
    concurrent_admits_never_take_more_than_the_pool_holds_sqlite,
    concurrent_admits_never_take_more_than_the_pool_holds_postgres
);
async fn concurrent_admits_never_take_more_than_the_pool_holds(backend: Backend) {
    const BALANCE: i64 = 1_000_000;
    const PER_CALL: i64 = 3_000;
    let t = TestDb::new(backend).await;
    let p = t.pool(1, BALANCE, BALANCE).await;
    let acc = Accountant::start(t.db.clone(), Default::default());
    // More calls than the pool covers, all in flight at once.
    let calls: Vec<_> = (0..400)
        .map(|i| {
            let (acc, p) = (acc.clone(), p.clone());
            tokio::spawn(async move { acc.admit(&p, PER_CALL, &call(&format!("r{i}"))).await })
        })
        .collect();
    let mut tickets = Vec::new();
    for c in calls {
        match c.await.unwrap().unwrap() {
            Admission::Admitted(ticket) => tickets.push(ticket),
            Admission::Insufficient { balance } => assert!(balance < PER_CALL, "{balance}"),
            Admission::Blocked => panic!("the pool is not blocked"),
        }
    }
    let taken: i64 = tickets.iter().map(|t| t.reserved).sum();
    assert!(taken <= BALANCE, "admitted {taken} of {BALANCE}");
    // Leases go call by call near the end, so every coin that covers a call is used.
    assert_eq!(tickets.len() as i64, BALANCE / PER_CALL);
    for ticket in tickets {
        ticket.settle(served(PER_CALL));
    }
    acc.flush(FLUSH_LIMIT).await;
    let charged: i64 = t.rows(&p).await.iter().map(|r| r.coins_micro).sum();
    assert_eq!(charged, taken);
    assert_eq!(t.balance(&p).await, BALANCE - taken);
}
