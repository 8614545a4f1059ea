//! What the server functions send to the pages: built on the server (in
//! `ssr`), shown in the browser (in `ui`). Plain serde types. Money is micro-coins.

use crate::domain::explain::{explain, Explanation, Recorded};
use crate::domain::outcome::CallOutcome;
pub use crate::domain::owner::{OwnerKind, Role};
use crate::domain::pricing::Breakdown;
use crate::domain::rate::RateLimits;
use crate::domain::usage::Usage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub role: Role,
}

/// What the sign-in page offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInOptions {
    /// Whether the password form is shown (`auth.local`).
    pub local: bool,
    /// The single sign-on button's label, when `auth.oidc` is configured.
    pub sso_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    /// What can be spent now.
    pub balance: i64,
    /// Coins a lowered max or a block holds back; they come back when the
    /// config allows.
    pub held: i64,
    /// `None` when unlimited.
    pub max: Option<i64>,
    pub refresh: i64,
    pub starting: i64,
    /// When the pool will be full again (Unix ms), if it will.
    pub full_at: Option<i64>,
}

impl PoolView {
    pub fn blocked(&self) -> bool {
        self.max == Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRow {
    pub name: String,
    pub pool: Option<PoolView>,
    pub key_count: u64,
    pub managers: Vec<String>,
    /// "named entry" or "defaults".
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientsPage {
    pub rows: Vec<ClientRow>,
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub can_create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAccessRow {
    pub model: String,
    /// "allowed", "denied" or "consent needed".
    pub verdict: String,
    pub rule: String,
    /// Consent is what decides this model (graylisted).
    pub consent_applies: bool,
    pub consented: bool,
    pub consent_notice: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: i64,
    pub prefix: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The key's own rate limits (its owner's apply as well).
    pub limits: RateLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub at: i64,
    pub model: String,
    /// The tokens by kind, as stored.
    pub usage: Usage,
    /// The cost line by line, as stored (zeros on rows older than the breakdown).
    pub lines: Breakdown,
    /// The true cost.
    pub cost: i64,
    /// How far the cost exceeded the reservation.
    pub overage: i64,
    /// What the pool paid.
    pub coins: i64,
    /// The stable outcome code (`domain::outcome::CallOutcome`).
    pub code: String,
    /// More about it.
    pub outcome: String,
}

impl LedgerRow {
    /// The charge as a sum, and why the coins paid differ when they do.
    pub fn explain(&self) -> Explanation {
        explain(
            &self.usage,
            &self.lines,
            Recorded {
                cost: self.cost,
                overage: self.overage,
                coins: self.coins,
                code: CallOutcome::parse(&self.code),
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD`
    pub day: String,
    pub by_model: Vec<(String, i64)>,
}

/// A client's or user's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDetail {
    pub kind: OwnerKind,
    pub name: String,
    pub source: String,
    pub pool: Option<PoolView>,
    pub models: Vec<ModelAccessRow>,
    pub keys: Vec<KeyRow>,
    pub managers: Vec<String>,
    pub can_edit_managers: bool,
    pub recent: Vec<LedgerRow>,
    pub usage: Vec<DayUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKeyShown {
    pub secret: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub username: String,
    pub role: Role,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub generation: i64,
    pub applied_at: i64,
    pub last_reload_ok: bool,
    pub last_error: Option<String>,
    /// What the last applied config changed, as `check-config --plan` prints it.
    pub last_plan: Option<String>,
    pub unmatched: Vec<String>,
    pub warnings: Vec<String>,
    pub path: String,
}

/// The config status shown on the start page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub generation: i64,
    pub applied_at: i64,
    pub last_reload_ok: bool,
    pub models: Vec<String>,
}

/// One deployment's health as this instance sees it (the admins' Deployments page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRow {
    pub model: String,
    pub deployment: String,
    /// Where it sends calls (the provider and its base URL).
    pub upstream: String,
    pub weight: u32,
    pub max_in_flight: Option<u32>,
    /// `closed`, `open` or `probing`.
    pub breaker: String,
    pub open_for_ms: i64,
    pub in_flight: u32,
    pub served: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub fallbacks: Vec<String>,
}

/// Budget alerts on the admins' `/config` page: the targets (URLs only,
/// never a secret), the thresholds and the most recent deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsReport {
    /// Whether the config has an `alerts:` section.
    pub configured: bool,
    pub targets: Vec<String>,
    pub thresholds: Vec<u8>,
    /// Newest first.
    pub deliveries: Vec<AlertDeliveryRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDeliveryRow {
    pub id: String,
    pub created_at: i64,
    /// `client acme` or `user alice`.
    pub owner: String,
    pub threshold_percent: i64,
    pub target: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// One audit trail entry, as the admins' `/audit` page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub addr: String,
    pub detail: String,
}

/// A page of audit entries, newest first, and where the neighbouring pages start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// `after=` for the newer page, if there may be one.
    pub newer: Option<i64>,
    /// `before=` for the older page, if there is one.
    pub older: Option<i64>,
}

/// Spend totals of one group (or of everything) over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub calls: i64,
    pub refused: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub coins: i64,
}

/// One group of the usage explorer: a client, a user or a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendGroup {
    /// What the page shows.
    pub label: String,
    /// The name the drill-down filters on; `None` for "other".
    pub name: Option<String>,
    pub spend: Spend,
}

/// One stacked series of the chart: coins per day of the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendSeries {
    pub group: SpendGroup,
    pub per_day: Vec<i64>,
}

/// The usage explorer (`/usage`), read from the daily roll-up only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendReport {
    /// The range as applied, `YYYY-MM-DD`, both days included.
    pub from: String,
    pub to: String,
    pub group: crate::domain::spend::Grouping,
    /// Each day of the range, `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// The top groups, then "other" if any group is left.
    pub series: Vec<SpendSeries>,
    /// The groups that spent most, most first.
    pub top: Vec<SpendGroup>,
    /// How many groups had any ledger row in the range.
    pub groups: u64,
    pub total: Spend,
}

/// One call of the drill-down: a ledger row and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRow {
    pub id: i64,
    /// `client alpha`, `user bob`.
    pub owner: String,
    pub row: LedgerRow,
}

/// A page of calls (`/usage/calls`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsPage {
    pub from: String,
    pub to: String,
    pub group: crate::domain::spend::Grouping,
    /// The group's name; `None`: every call in the grouping.
    pub name: Option<String>,
    pub rows: Vec<CallRow>,
    /// The cursor of the next (older) page, if there is one.
    pub next: Option<String>,
}
