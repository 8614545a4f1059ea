//! Server-only code: storage, config loading and the services that server
//! functions and the JSON API call. Compiled only with the `ssr` feature.

pub mod accounts;
pub mod actions;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod balancer;
pub mod changes;
pub mod config_file;
pub mod config_state;
pub mod consents;
pub mod console;
pub mod db;
pub mod entities;
pub mod guard;
pub mod keys;
pub mod ledger;
pub mod oidc;
pub mod owner_settings;
pub mod owners;
pub mod pools;
pub mod rate_windows;
pub mod responses;
pub mod rollup;
pub mod session;
pub mod sync;
pub mod usage;

use crate::domain::config::{Config, Warning};
use arc_swap::ArcSwap;
use leptos::prelude::LeptosOptions;
use sea_orm::DatabaseConnection;
use std::path::PathBuf;
use std::sync::Arc;

/// The config in force: what was last loaded successfully.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<Warning>,
    /// SHA-256 of the file's bytes, hex.
    pub content_hash: String,
}

/// The live config snapshot. Readers see the old or the new config, never a mix.
pub type SharedConfig = Arc<ArcSwap<LoadedConfig>>;

/// Everything a request handler or server function needs. Cheap to clone.
#[derive(Clone)]
pub struct AppContext {
    pub leptos_options: LeptosOptions,
    pub db: DatabaseConnection,
    pub config: SharedConfig,
    pub config_path: PathBuf,
    pub public_url: String,
    pub reload: Arc<ArcSwap<ReloadStatus>>,
    /// Held while a config is applied and swapped in, and while an owner is
    /// created from the snapshot, so a new client never gets a stale config.
    pub apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// One-time token for `/setup` while no admin exists.
    pub setup_token: Arc<std::sync::Mutex<Option<String>>>,
    /// This instance's view of every deployment's health.
    pub balancer: balancer::Balancer,
}

impl AppContext {
    /// Whether cookies must be `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// What this instance knows about its config reloads, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    pub generation: i64,
    pub applied_at: i64,
    pub last_reload_ok: bool,
    pub last_error: Option<String>,
    /// Reloads that failed since this process started.
    pub failures: u64,
}

impl axum::extract::FromRef<AppContext> for LeptosOptions {
    fn from_ref(ctx: &AppContext) -> Self {
        ctx.leptos_options.clone()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A real argon2id hash, verified against when a username does not exist,
/// so that sign-in takes the same time either way.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| auth::hash_password("no such user, no such password").unwrap_or_default())
}
