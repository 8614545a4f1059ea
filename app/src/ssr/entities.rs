//! sea-orm entities, one module per table (see migrations/). Times are Unix
//! milliseconds and money is micro-coins, both `i64`.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod user {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub username: String,
        pub password_hash: String,
        pub role: String,
        pub active: bool,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod session {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: i64,
        pub created_at: i64,
        pub last_seen_at: i64,
    }
    no_relations!();
}

pub mod client {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "clients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub created_by: Option<i64>,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod client_manager {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "client_managers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub client_id: i64,
        pub user_id: i64,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod api_key {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_kind: String,
        pub owner_id: i64,
        pub secret_hash: String,
        pub prefix: String,
        pub label: String,
        pub created_by: Option<i64>,
        pub created_at: i64,
        pub last_used_at: Option<i64>,
        pub expires_at: Option<i64>,
        pub revoked_at: Option<i64>,
        /// The key's own limits, below its owner's; `None` is none.
        pub requests_per_minute: Option<i64>,
        pub tokens_per_minute: Option<i64>,
    }
    no_relations!();
}

pub mod rate_window {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rate_windows")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// `client:ID`, `user:ID` or `key:ID`.
        pub scope: String,
        /// Unix ms of the window's first instant (a whole minute).
        pub window_start: i64,
        pub requests_taken: i64,
        pub tokens_taken: i64,
    }
    no_relations!();
}

pub mod pool {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pools")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_kind: String,
        pub owner_id: i64,
        pub max_micro: i64,
        pub unlimited: bool,
        pub refresh_micro: i64,
        pub balance_micro: i64,
        pub refilled_at: i64,
        pub updated_at: i64,
        /// Coins a config change put out of reach (above a lowered `max`, or
        /// all of them while blocked); given back when `max` allows.
        pub held_micro: i64,
    }
    no_relations!();
}

/// A budget lease: coins an instance took from a pool and spends in memory.
/// `amount_micro` is what the lease still holds that no ledger row accounts
/// for yet; a lease not renewed for `ledger::ORPHAN_AFTER_MS` is charged in full.
pub mod lease {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leases")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub pool_id: i64,
        pub holder: String,
        pub unlimited: bool,
        pub amount_micro: i64,
        pub created_at: i64,
        pub renewed_at: i64,
    }
    no_relations!();
}

pub mod ledger {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub pool_id: i64,
        pub key_id: Option<i64>,
        pub model: String,
        pub tokens_in: i64,
        pub tokens_out: i64,
        /// What the pool paid.
        pub coins_micro: i64,
        pub created_at: i64,
        pub request_id: String,
        pub outcome: String,
        /// The call's true cost at the model's price.
        pub cost_micro: i64,
        /// How far the true cost exceeded the reservation (0 normally).
        pub overage_micro: i64,
        /// How the call ended: a `domain::outcome::CallOutcome` code. The
        /// `outcome` column holds the detail.
        pub code: String,
        /// Of `tokens_in`, those read from the provider's prompt cache.
        pub cached_in: i64,
        /// Of `tokens_in`, those written to the provider's prompt cache.
        pub cache_write_in: i64,
        /// Of `tokens_out`, the reasoning tokens (charged as output).
        pub reasoning_out: i64,
        /// The cost line by line (`domain::pricing::Breakdown`); their sum
        /// is `cost_micro`, except where the reservation was charged instead.
        pub input_micro: i64,
        pub cached_input_micro: i64,
        pub cache_write_micro: i64,
        pub output_micro: i64,
        pub request_micro: i64,
        /// The deployment that served the call (empty if none did).
        pub deployment: String,
    }
    no_relations!();
}

pub mod access_policy {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "access_policies")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_kind: String,
        pub owner_id: i64,
        pub source: String,
        pub default_mode: String,
        pub whitelist: String,
        pub blacklist: String,
        pub graylist: String,
        pub updated_at: i64,
    }
    no_relations!();
}

pub mod consent {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consents")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_kind: String,
        pub owner_id: i64,
        pub model: String,
        pub recorded_by: Option<i64>,
        pub recorded_at: i64,
        pub revoked_at: Option<i64>,
    }
    no_relations!();
}

pub mod config_state {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "config_state")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub generation: i64,
        pub content_hash: String,
        pub applied_at: i64,
        pub last_reload_ok: bool,
        pub last_error: Option<String>,
        pub last_error_at: Option<i64>,
        /// What the last applied config changed (`check-config --plan` text).
        pub last_plan: Option<String>,
    }
    no_relations!();
}

pub mod login_failure {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_failures")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub username: String,
        pub at: i64,
        /// The client address the attempt came from.
        pub addr: String,
    }
    no_relations!();
}

/// A response stored for the Responses API (`ssr::responses`): JSON text in
/// `context` (the conversation up to this response's input) and `response`.
pub mod stored_response {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stored_responses")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub owner_kind: String,
        pub owner_id: i64,
        pub model: String,
        pub created_at: i64,
        pub expires_at: i64,
        #[sea_orm(column_type = "Text")]
        pub context: String,
        #[sea_orm(column_type = "Text")]
        pub response: String,
    }
    no_relations!();
}

/// Budget alerts (`ssr::alerts`): per pool, the highest threshold fired and
/// not re-armed since (0: none).
pub mod alert_state {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub pool_id: i64,
        pub fired_percent: i64,
        pub updated_at: i64,
    }
    no_relations!();
}

/// The outbox of budget alert webhooks: one row per alert and target, with
/// the exact body that is signed and sent. `status` is `pending`,
/// `delivered` or `failed`; a pending row is due at `next_attempt_at`.
pub mod alert_delivery {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub created_at: i64,
        pub pool_id: i64,
        pub owner_kind: String,
        pub owner_name: String,
        pub threshold_percent: i64,
        pub target_url: String,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub attempts: i64,
        pub next_attempt_at: i64,
        pub status: String,
        pub last_error: Option<String>,
        pub finished_at: Option<i64>,
    }
    no_relations!();
}

/// The audit trail (`ssr::audit`): append-only, each entry chained to the
/// one before by `prev_hash`; `audit_head` holds the last `seq` and `hash`,
/// `audit_config` a digest of each entry of the config last applied.
pub mod audit_log {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at_ms: i64,
        pub actor: String,
        pub action: String,
        #[sea_orm(column_type = "Text")]
        pub target: String,
        pub addr: String,
        #[sea_orm(column_type = "Text")]
        pub detail: String,
        pub prev_hash: String,
        pub hash: String,
    }
    no_relations!();
}

pub mod audit_head {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub seq: i64,
        pub hash: String,
    }
    no_relations!();
}

pub mod audit_config {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_config")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[sea_orm(column_type = "Text")]
        pub entries: String,
    }
    no_relations!();
}

/// A provider's account linked to a user (`ssr::oidc`).
pub mod oidc_identity {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oidc_identities")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        #[sea_orm(column_type = "Text")]
        pub issuer: String,
        #[sea_orm(column_type = "Text")]
        pub subject: String,
        pub created_at: i64,
    }
    no_relations!();
}

/// A single sign-on started and not yet finished (`ssr::oidc`).
pub mod oidc_login {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oidc_logins")]
    pub struct Model {
        /// SHA-256 of the `state`, hex.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// SHA-256 of the browser's `tg_oidc` cookie, hex.
        pub browser: String,
        #[sea_orm(column_type = "Text")]
        pub issuer: String,
        pub addr: String,
        pub created_at: i64,
    }
    no_relations!();
}

/// The ledger rolled up per UTC day, owner and model (`ssr::rollup`):
/// always equal to a `GROUP BY` over the ledger joined with its pools.
pub mod usage_daily {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "usage_daily")]
    pub struct Model {
        /// Days since the Unix epoch, UTC: `created_at / 86_400_000`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner_kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub model: String,
        /// Ledger rows (refused calls and orphaned-lease charges included).
        pub calls: i64,
        /// Of `calls`, those with the code `refused`.
        pub refused: i64,
        pub tokens_in: i64,
        pub tokens_out: i64,
        pub coins_micro: i64,
    }
    no_relations!();
}
