//! Command-line arguments. Global options may come before or after the
//! subcommand; a flag beats its env var, which beats the config file's
//! `server:` section, which beats the built-in default.

use app::ssr::{db, LoadedConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about = "A self-hosted AI model gateway")]
pub struct Cli {
    /// The YAML config file.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// sqlite://… or postgres://… (default: sqlite://data/tollgate.db).
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Address to listen on (default: 127.0.0.1:3000).
    #[arg(long, global = true, env = "TOLLGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and web UI, reloading the config file when it changes.
    Serve,
    /// Create or migrate the database, then sync the config into it.
    InitDb,
    /// Validate the config file; print errors and warnings.
    CheckConfig {
        /// Also print what the file would change against the database, for
        /// every existing client and user (like `terraform plan`); writes nothing
        /// but pending schema migrations.
        #[arg(long)]
        plan: bool,
    },
    /// Create an admin user; the password comes from TOLLGATE_ADMIN_PASSWORD or stdin.
    CreateAdmin { username: String },
    /// Manage API keys of existing clients and users.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain; exits non-zero naming the first broken link.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// The client that owns the key (created in the web UI).
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        client: Option<String>,
        /// The user that owns the key.
        #[arg(long)]
        user: Option<String>,
        /// A note to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
        /// Expiry, e.g. 30d, 12h, 45m.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// The key's own requests per minute (its owner's limit applies too).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
        requests_per_minute: Option<u64>,
        /// The key's own tokens per minute (its owner's limit applies too).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
        tokens_per_minute: Option<u64>,
    },
    /// List keys (all, or one owner's).
    List {
        #[arg(long, conflicts_with = "user")]
        client: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke the key whose display prefix starts with PREFIX.
    Revoke { prefix: String },
}

pub const DEFAULT_CONFIG: &str = "tollgate.yaml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Settings after layering flags, env, file and defaults.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config_path: PathBuf,
    pub database_url: String,
    pub listen: String,
    /// `server.public_url`; when unset, the address actually listened on.
    pub public_url: Option<String>,
}

pub fn resolve(cli: &Cli, loaded: &LoadedConfig) -> Resolved {
    let file = &loaded.config.server;
    let listen = cli
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    Resolved {
        config_path: config_path(cli),
        database_url: cli
            .database_url
            .clone()
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| db::DEFAULT_DATABASE_URL.to_string()),
        public_url: file
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        listen,
    }
}

pub fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}
