//! The live reconciler: watches the config file's parent directory (editors
//! that save by renaming a temp file over the original are seen too),
//! debounces bursts of events, and applies a changed, valid file in one
//! transaction before swapping the in-memory snapshot. A file is applied only
//! once it reads the same twice, [`STABLE`] apart, so a save caught half-way
//! is not applied. An invalid or unreadable file keeps the last good config
//! and is logged and recorded in `config_state`; reading never blocks (a
//! FIFO in the file's place is refused, not waited on).

use crate::error::CliError;
use crate::startup::apply;
use app::domain::audit::reload_failed_detail;
use app::ssr::config_file;
use app::ssr::{audit, config_state, now_ms, sha256_hex, AppContext, ReloadStatus};
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
/// A file must read the same twice this far apart before it is applied.
const STABLE: Duration = Duration::from_millis(300);

/// What the watcher does after a reload attempt.
enum Next {
    /// Wait for the next change (or the safety-net poll).
    Wait,
    /// The file was still changing: read it again shortly.
    Settle,
    /// The database refused the apply: try again.
    Retry,
}

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
            Next::Wait => POLL,
            Next::Settle => STABLE,
            Next::Retry => RETRY,
        };
    }
}

fn set_status(ctx: &AppContext, f: impl FnOnce(&mut ReloadStatus)) {
    let mut s = (**ctx.reload.load()).clone();
    f(&mut s);
    ctx.reload.store(Arc::new(s));
}

/// Reads the file without blocking the runtime (or ever waiting on a FIFO).
async fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || config_file::read_bytes(&p))
        .await
        .map_err(std::io::Error::other)?
}

/// Records a reload that failed, so that it is never silent: logged, in
/// `config_state` for `/config`, and in this instance's `/healthz`.
async fn reject(ctx: &AppContext, message: String) {
    let generation = ctx.reload.load().generation;
    tracing::warn!("config change rejected, generation {generation} stays in force: {message}");
    if let Err(db) = config_state::record_failure(&ctx.db, &message, now_ms()).await {
        tracing::error!("cannot record the config error: {db}");
    }
    let entry = audit::Who::config()
        .entry(audit::Action::ConfigReloadFailed, "config")
        .detail(reload_failed_detail(generation, &message));
    audit::record(&ctx.db, entry).await;
    set_status(ctx, |s| {
        s.last_reload_ok = false;
        s.last_error = Some(message);
        s.failures += 1;
    });
}

/// Reads and applies the file if its content changed and has settled.
async fn reload(ctx: &AppContext, path: &Path, last_seen: &mut Option<String>) -> Next {
    let file = ctx.config_path.display().to_string();
    let bytes = match read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Deleted, probably about to be recreated; keep what is in force.
            tracing::debug!("{} is missing; waiting for it to come back", path.display());
            return Next::Wait;
        }
        Err(e) => {
            *last_seen = None;
            reject(ctx, format!("{file}: cannot read the config file: {e}")).await;
            return Next::Wait;
        }
    };
    let hash = sha256_hex(&bytes);
    if last_seen.as_deref() == Some(hash.as_str()) {
        return Next::Wait;
    }
    // A save caught half-way may be valid YAML (cut before `clients:`, say):
    // apply only what reads the same twice.
    tokio::time::sleep(STABLE).await;
    match read(path).await {
        Ok(again) if again == bytes => {}
        _ => return Next::Settle,
    }
    *last_seen = Some(hash);
    let parsed = config_file::parse_bytes(&file, bytes);
    let _guard = ctx.apply_lock.lock().await;
    match parsed {
        Err(e) => {
            reject(ctx, e.to_string()).await;
            Next::Wait
        }
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{}", w.located(&file));
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
                    Next::Wait
                }
                Err(e) => {
                    tracing::error!("cannot apply the config, will retry: {e}");
                    *last_seen = None;
                    set_status(ctx, |s| {
                        s.last_reload_ok = false;
                        s.last_error = Some(format!("database error while applying: {e}"));
                        s.failures += 1;
                    });
                    Next::Retry
                }
            }
        }
    }
}
