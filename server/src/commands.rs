//! The one-shot commands, and `serve`. The top of the crate: it uses every
//! other module and nothing uses it.

use crate::args::{config_path, resolve, Cli, Command};
use crate::error::CliError;
use crate::startup::prepare_database;
use app::ssr::config_file;
use app::ssr::{db, now_ms, sync};

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
