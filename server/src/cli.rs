//! Command-line parsing and the one-shot commands. Global options may come
//! before or after the subcommand; a flag beats its env var, which beats the
//! config file's `server:` section, which beats the built-in default.

use app::ssr::config_file::{self, ConfigError};
use app::ssr::{config_state, db, now_ms, sync, LoadedConfig};
use clap::{Parser, Subcommand};
use sea_orm::DatabaseConnection;
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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Other(String),
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

/// Connects, migrates and syncs the config in one transaction.
pub async fn prepare_database(
    url: &str,
    loaded: &LoadedConfig,
) -> Result<(DatabaseConnection, i64), CliError> {
    let conn = db::connect(url).await?;
    db::migrate(&conn).await?;
    let generation = apply(&conn, loaded).await?;
    Ok((conn, generation))
}

/// Syncs a config into the database in one transaction; returns its generation.
pub async fn apply(
    conn: &DatabaseConnection,
    loaded: &LoadedConfig,
) -> Result<i64, sea_orm::DbErr> {
    let now = now_ms();
    let txn = db::begin_write(conn).await?;
    let plan = sync::plan_text(&txn, &loaded.config, now).await?;
    let report = sync::sync_all(&txn, &loaded.config, now).await?;
    let generation = config_state::record_applied(&txn, &loaded.content_hash, &plan, now).await?;
    txn.commit().await?;
    tracing::info!(
        generation,
        pools_created = report.pools_created,
        pools_updated = report.pools_updated,
        policies_written = report.policies_written,
        unmatched = report.unmatched.len(),
        "config applied"
    );
    Ok(generation)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let path = config_path(&cli);
    match cli.command {
        Command::CheckConfig { plan } => {
            let loaded = config_file::load(&path)?;
            for w in &loaded.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            if plan {
                let settings = resolve(&cli, &loaded);
                let conn = db::connect(&settings.database_url).await?;
                db::migrate(&conn).await?;
                let text = sync::plan_text(&conn, &loaded.config, now_ms()).await?;
                conn.close().await?;
                use std::io::Write;
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| CliError::Other(format!("cannot print the plan: {e}")))?;
            }
            eprintln!(
                "{}: ok ({} models, {} named clients, {} named users)",
                path.display(),
                loaded.config.models.len(),
                loaded.config.clients.named.len(),
                loaded.config.users.named.len()
            );
            Ok(())
        }
        Command::InitDb => {
            let loaded = config_file::load(&path)?;
            for w in &loaded.warnings {
                tracing::warn!("{}: {w}", path.display());
            }
            let settings = resolve(&cli, &loaded);
            let (conn, generation) = prepare_database(&settings.database_url, &loaded).await?;
            conn.close().await?;
            eprintln!("database ready; config generation {generation}");
            Ok(())
        }
        Command::Keys { ref command } => {
            let loaded = config_file::load(&path)?;
            let settings = resolve(&cli, &loaded);
            let conn = db::connect(&settings.database_url).await?;
            db::migrate(&conn).await?;
            let result = crate::keys_cli::run(&conn, command).await;
            conn.close().await?;
            result
        }
        Command::CreateAdmin { ref username } => {
            let loaded = config_file::load(&path)?;
            let settings = resolve(&cli, &loaded);
            let password = match std::env::var("TOLLGATE_ADMIN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map_err(|e| {
                        CliError::Other(format!("cannot read the password from stdin: {e}"))
                    })?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            app::ssr::auth::check_password_policy(&password).map_err(CliError::Other)?;
            let hash = app::ssr::auth::hash_password(&password).map_err(CliError::Other)?;
            let (conn, _) = prepare_database(&settings.database_url, &loaded).await?;
            let user = app::ssr::owners::create_user(
                &conn,
                &loaded.config,
                username,
                &hash,
                "admin",
                now_ms(),
            )
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
            conn.close().await?;
            eprintln!("created admin `{}`", user.username);
            Ok(())
        }
        Command::Serve => {
            let loaded = config_file::load(&path)?;
            let settings = resolve(&cli, &loaded);
            crate::serve::serve(settings, loaded).await
        }
    }
}
