//! The live reconciler: watches the config file's parent directory (editors
//! that save by renaming a temp file over the original are seen too),
//! debounces bursts of events, and applies a changed, valid file in one
//! transaction before swapping the in-memory snapshot. An invalid file keeps
//! the last good config and is logged and recorded in `config_state`.

use crate::cli::{apply, CliError};
use app::ssr::config_file;
use app::ssr::{config_state, now_ms, sha256_hex, AppContext, ReloadStatus};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A safety net for missed events (network file systems, exotic editors).
const POLL: Duration = Duration::from_secs(30);
/// How soon to retry after the database refused an apply.
const RETRY: Duration = Duration::from_secs(1);

pub fn spawn(ctx: AppContext) -> Result<RecommendedWatcher, CliError> {
    let path = std::path::absolute(&ctx.config_path)
        .map_err(|e| CliError::Other(format!("config path {}: {e}", ctx.config_path.display())))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| CliError::Other(format!("{} has no parent directory", path.display())))?;
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| CliError::Other(format!("cannot watch {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| CliError::Other(format!("cannot watch {}: {e}", dir.display())))?;
    let seen = ctx.config.load().content_hash.clone();
    tokio::spawn(run(ctx, path, rx, seen));
    Ok(watcher)
}

async fn run(ctx: AppContext, path: PathBuf, mut rx: mpsc::UnboundedReceiver<()>, seen: String) {
    let mut last_seen = Some(seen);
    let mut wait = POLL;
    loop {
        tokio::select! {
            ev = rx.recv() => if ev.is_none() { return },
            _ = tokio::time::sleep(wait) => {}
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        wait = match reload(&ctx, &path, &mut last_seen).await {
            Ok(()) => POLL,
            Err(()) => RETRY,
        };
    }
}

fn set_status(ctx: &AppContext, f: impl FnOnce(&mut ReloadStatus)) {
    let mut s = (**ctx.reload.load()).clone();
    f(&mut s);
    ctx.reload.store(Arc::new(s));
}

/// Reads and applies the file if its content changed. `Err` asks for a retry.
async fn reload(ctx: &AppContext, path: &Path, last_seen: &mut Option<String>) -> Result<(), ()> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Deleted, probably about to be recreated; keep what is in force.
            tracing::debug!("{} is missing; waiting for it to come back", path.display());
            return Ok(());
        }
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            return Err(());
        }
    };
    let hash = sha256_hex(&bytes);
    if last_seen.as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    *last_seen = Some(hash);
    let file = ctx.config_path.display().to_string();
    let parsed = match String::from_utf8(bytes) {
        Ok(text) => config_file::parse(&file, &text),
        Err(_) => Err(config_file::ConfigError::whole_file(
            &file,
            "the file is not UTF-8 text".into(),
        )),
    };
    let _guard = ctx.apply_lock.lock().await;
    match parsed {
        Err(e) => {
            let generation = ctx.reload.load().generation;
            tracing::warn!("config change rejected, generation {generation} stays in force: {e}");
            let message = e.to_string();
            if let Err(db) = config_state::record_failure(&ctx.db, &message, now_ms()).await {
                tracing::error!("cannot record the config error: {db}");
            }
            set_status(ctx, |s| {
                s.last_reload_ok = false;
                s.last_error = Some(message);
            });
            Ok(())
        }
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{file}: {w}");
            }
            match apply(&ctx.db, &loaded).await {
                Ok(generation) => {
                    ctx.config.store(Arc::new(loaded));
                    set_status(ctx, |s| {
                        s.generation = generation;
                        s.applied_at = now_ms();
                        s.last_reload_ok = true;
                        s.last_error = None;
                    });
                    Ok(())
                }
                Err(e) => {
                    tracing::error!("cannot apply the config, will retry: {e}");
                    *last_seen = None;
                    set_status(ctx, |s| {
                        s.last_reload_ok = false;
                        s.last_error = Some(format!("database error while applying: {e}"));
                    });
                    Err(())
                }
            }
        }
    }
}
