//! The one-shot commands, and `serve`. The top of the crate: it uses every
//! other module and nothing uses it.

use crate::args::{config_path, resolve, AuditCommand, Cli, Command, KeysCommand};
use crate::error::CliError;
use crate::startup::prepare_database;
use app::ssr::config_file;
use app::ssr::{audit, db, now_ms, sync};
use std::path::Path;

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let path = config_path(&cli);
    match &cli.command {
        Command::CheckConfig { plan } => check_config(&cli, &path, *plan).await,
        Command::InitDb => init_db(&cli, &path).await,
        Command::Keys { command } => keys(&cli, &path, command).await,
        Command::CreateAdmin { username } => create_admin(&cli, &path, username).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&cli, &path).await,
        Command::Serve => {
            let loaded = config_file::load(&path)?;
            let settings = resolve(&cli, &loaded);
            crate::serve::serve(settings, loaded).await
        }
    }
}

/// `check-config [--plan]`: validates the file and, with `--plan`, prints
/// what syncing it would change.
async fn check_config(cli: &Cli, path: &Path, plan: bool) -> Result<(), CliError> {
    let loaded = config_file::load(path)?;
    for w in &loaded.warnings {
        eprintln!("warning: {}", w.located(&path.display().to_string()));
    }
    eprint!("{}", app::domain::plan::models_text(&loaded.config));
    if plan {
        let settings = resolve(cli, &loaded);
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

/// `init-db`: creates or migrates the database and syncs the config into it.
async fn init_db(cli: &Cli, path: &Path) -> Result<(), CliError> {
    let loaded = config_file::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{}", w.located(&path.display().to_string()));
    }
    let settings = resolve(cli, &loaded);
    let (conn, generation) = prepare_database(&settings.database_url, &loaded).await?;
    conn.close().await?;
    eprintln!("database ready; config generation {generation}");
    Ok(())
}

/// `keys …`
async fn keys(cli: &Cli, path: &Path, command: &KeysCommand) -> Result<(), CliError> {
    let loaded = config_file::load(path)?;
    let settings = resolve(cli, &loaded);
    let conn = db::connect(&settings.database_url).await?;
    db::migrate(&conn).await?;
    let result = crate::keys_cli::run(&conn, command).await;
    conn.close().await?;
    result
}

/// `audit verify`: walks the whole audit trail; an error names the first
/// broken link.
async fn audit_verify(cli: &Cli, path: &Path) -> Result<(), CliError> {
    // The trail is checked most when something is wrong: a config that does
    // not load is no obstacle when the database is named on its own.
    let loaded = match config_file::load(path) {
        Ok(l) => l,
        Err(_) if cli.database_url.is_some() => app::ssr::LoadedConfig {
            config: Default::default(),
            warnings: Vec::new(),
            content_hash: String::new(),
        },
        Err(e) => return Err(e.into()),
    };
    let settings = resolve(cli, &loaded);
    let conn = db::connect(&settings.database_url).await?;
    db::migrate(&conn).await?;
    let result = audit::verify(&conn).await;
    conn.close().await?;
    match result? {
        Ok(n) => {
            eprintln!("audit chain intact: {n} entries");
            Ok(())
        }
        Err(b) => Err(CliError::Other(format!("audit chain broken: {b}"))),
    }
}

/// `create-admin USERNAME`, the password from `TOLLGATE_ADMIN_PASSWORD` or stdin.
async fn create_admin(cli: &Cli, path: &Path, username: &str) -> Result<(), CliError> {
    let loaded = config_file::load(path)?;
    let settings = resolve(cli, &loaded);
    let password = admin_password()?;
    app::ssr::auth::check_password_policy(&password).map_err(CliError::Other)?;
    let hash = app::ssr::auth::hash_password(&password).map_err(CliError::Other)?;
    let (conn, _) = prepare_database(&settings.database_url, &loaded).await?;
    let user =
        app::ssr::owners::create_user(&conn, &loaded.config, username, &hash, "admin", now_ms())
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
    let entry = audit::Who::cli()
        .entry(
            audit::Action::AdminCreated,
            audit::target("user", &user.username),
        )
        .detail("tollgate create-admin");
    audit::record(&conn, entry).await;
    conn.close().await?;
    eprintln!("created admin `{}`", user.username);
    Ok(())
}

fn admin_password() -> Result<String, CliError> {
    if let Ok(p) = std::env::var("TOLLGATE_ADMIN_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Other(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
