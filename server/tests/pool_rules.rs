//! The pool arithmetic lives once, in `app::domain::pool`; the SQL that
//! applies it (`ssr::pools`: a config change, a lease's coins coming back, a
//! refill) is checked against it here, on both databases, over random pool
//! states: whatever a statement leaves in the row must be what the domain
//! function computes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::config::{PoolLimit, PoolSettings};
use app::domain::pool::{refilled, with_settings, PoolState, MS_PER_HOUR};
use app::ssr::entities::pool;
use app::ssr::pools;
use common::*;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};

const CONFIG: &str = "clients:\n  default:\n    max: 100\n    starting: 100\n";

/// A small deterministic generator: the same cases on every run.
struct Cases(u64);

impl Cases {
    fn next(&mut self, below: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as i64
    }

    fn limit(&mut self) -> PoolLimit {
        match self.next(6) {
            0 => PoolLimit::Unlimited,
            1 => PoolLimit::Limited(0),
            _ => PoolLimit::Limited(self.next(1_000_000)),
        }
    }

    /// A state the database can hold: a limited pool's balance is within max.
    fn state(&mut self) -> PoolState {
        let limit = self.limit();
        let balance = match limit {
            PoolLimit::Limited(m) => self.next(m + 1),
            PoolLimit::Unlimited => self.next(1_000_000),
        };
        PoolState {
            limit,
            refresh_micro: self.next(3) * self.next(2_000_000),
            balance,
            refilled_at: 0,
            held: if self.next(2) == 0 {
                0
            } else {
                self.next(1_000_000)
            },
        }
    }
}

async fn store(app: &TestApp, id: i64, st: &PoolState) -> pool::Model {
    let m = pool::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = m.into_active_model();
    let (max, unlimited) = match st.limit {
        PoolLimit::Unlimited => (0, true),
        PoolLimit::Limited(m) => (m, false),
    };
    am.max_micro = Set(max);
    am.unlimited = Set(unlimited);
    am.refresh_micro = Set(st.refresh_micro);
    am.balance_micro = Set(st.balance);
    am.held_micro = Set(st.held);
    am.refilled_at = Set(st.refilled_at);
    am.update(&app.db).await.unwrap()
}

async fn load_state(app: &TestApp, id: i64) -> PoolState {
    let m = pool::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    pools::state(&m)
}

async fn sql_matches_the_domain_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["bot"])
        .build()
        .await;
    let id = app.pool("bot").await.id;
    let mut cases = Cases(0x9e37_79b9_7f4a_7c15);
    for case in 0..150 {
        let st = cases.state();
        let now = cases.next(10 * MS_PER_HOUR);
        // A config change: refill at the old rate, then the new settings.
        let settings = PoolSettings {
            limit: cases.limit(),
            refresh_micro: cases.next(2_000_000),
            starting_micro: 0,
        };
        let m = store(&app, id, &st).await;
        pools::apply_settings(&app.db, &m, &settings, now)
            .await
            .unwrap();
        let mut want = with_settings(&refilled(&st, now), &settings, now);
        let got = load_state(&app, id).await;
        if settings.limit == st.limit && settings.refresh_micro == st.refresh_micro {
            want = st; // nothing changed, nothing is written
        }
        assert_eq!(
            got, want,
            "{backend:?} case {case}: apply_settings from {st:?} to {settings:?} at {now}"
        );

        // Coins coming back from a lease: never above max, the rest held.
        let amount = cases.next(1_000_000);
        let m = store(&app, id, &st).await;
        pools::credit(&app.db, m.id, amount).await.unwrap();
        let got = load_state(&app, id).await;
        let want = match st.limit {
            PoolLimit::Unlimited => st,
            PoolLimit::Limited(max) => {
                let sum = st.balance + amount;
                PoolState {
                    balance: sum.min(max),
                    held: st.held + (sum - sum.min(max)),
                    ..st
                }
            }
        };
        assert_eq!(
            got, want,
            "{backend:?} case {case}: credit {amount} to {st:?}"
        );

        // A refill, credited once.
        let m = store(&app, id, &st).await;
        pools::credit_refill(&app.db, &m, now).await.unwrap();
        assert_eq!(
            load_state(&app, id).await,
            refilled(&st, now),
            "{backend:?} case {case}: refill of {st:?} at {now}"
        );
    }
}

on_backends!(
    pool_sql_matches_the_domain_rules,
    sql_matches_the_domain_story
);
