//! `tollgate serve`: start-up, the router and graceful shutdown.

use crate::args::Resolved;
use crate::error::CliError;
use crate::gateway::{self, accountant::Accountant, Gateway};
use crate::startup::prepare_database;
use crate::{health, reconciler, site};
use app::ssr::{now_ms, AppContext, LoadedConfig, ReloadStatus};
use app::{shell, App};
use arc_swap::ArcSwap;
use axum::routing::get;
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::path::Path;
use std::sync::Arc;

/// Site settings from Leptos.toml (and LEPTOS_* env vars), or the defaults
/// cargo-leptos builds with when the file is absent. A binary with the
/// bundle embedded ([`site`]) always uses the defaults, so its HTML shell
/// links the names it serves whatever the working directory holds.
fn leptos_options(listen: &str) -> LeptosOptions {
    let from_file = (!site::embedded() && Path::new("Leptos.toml").exists())
        .then(|| get_configuration(Some("Leptos.toml")).ok())
        .flatten();
    let mut opts = match from_file {
        Some(conf) => conf.leptos_options,
        None => LeptosOptions::builder()
            .output_name("tollgate")
            .site_root(std::env::var("LEPTOS_SITE_ROOT").unwrap_or_else(|_| "target/site".into()))
            .site_pkg_dir("pkg")
            .build(),
    };
    if let Ok(addr) = listen.parse() {
        opts.site_addr = addr;
    }
    opts
}

/// `public_url` is the configured `server.public_url`, if any.
pub fn router(ctx: AppContext, gw: Gateway, public_url: Option<&str>) -> Router {
    let origin_policy = crate::origin::OriginPolicy::new(public_url, &ctx.public_url);
    let routes = generate_route_list(App);
    let opts = ctx.leptos_options.clone();
    let audit_csv = Router::new()
        .route("/audit.csv", get(crate::audit_csv::export))
        .with_state(ctx.clone());
    let ctx_for_sso = ctx.clone();
    let ui = Router::new()
        .leptos_routes_with_context(
            &ctx,
            routes,
            {
                let ctx = ctx.clone();
                move || provide_context(ctx.clone())
            },
            move || shell(opts.clone()),
        )
        .merge(site::routes())
        .merge(crate::usage_csv::routes())
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppContext,
            _,
        >(
            {
                let ctx = ctx.clone();
                move || provide_context(ctx.clone())
            },
            shell,
        ))
        .with_state(ctx);
    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/openapi.json", get(crate::openapi::document))
        .with_state(gw.clone());
    let metrics = gw.metrics.clone();
    let sso = crate::oidc::routes(ctx_for_sso, gw.http.clone());
    gateway::router(gw)
        .merge(health)
        .merge(audit_csv)
        .merge(sso)
        .merge(ui)
        .layer(axum::middleware::from_fn_with_state(
            origin_policy,
            crate::origin::check,
        ))
        .layer(axum::middleware::from_fn(crate::body_limit::limit))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        .layer(axum::middleware::from_fn(gateway::request_id))
}

pub async fn serve(settings: Resolved, loaded: LoadedConfig) -> Result<(), CliError> {
    for w in &loaded.warnings {
        tracing::warn!("{}", w.located(&settings.config_path.display().to_string()));
    }
    let (db, generation) = prepare_database(&settings.database_url, &loaded).await?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {}: {e}", settings.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Other(format!("cannot read the listening address: {e}")))?;
    let ctx = context(&settings, loaded, db, generation, local);
    offer_setup(&ctx).await?;
    let _watcher = reconciler::spawn(ctx.clone())?;
    let http = http_client()?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let gw = Gateway {
        ctx: ctx.clone(),
        accountant: Accountant::start(ctx.db.clone(), metrics.clone()),
        directory: gateway::directory::Directory::start(ctx.db.clone()),
        limiter: gateway::limiter::Limiter::new(ctx.db.clone(), ctx.config.clone()),
        http,
        metrics,
    };
    spawn_orphan_sweep(ctx.db.clone());
    spawn_response_purge(ctx.db.clone());
    crate::alerts::spawn(ctx.clone()).map_err(CliError::Other)?;
    // Sign-in compares unknown names against this hash; compute it now, off
    // the request threads, rather than during the first such sign-in.
    tokio::task::spawn_blocking(|| {
        app::ssr::dummy_hash();
    });

    // Tests and scripts read this line to learn the port when listening on :0.
    tracing::info!("listening on http://{local}");
    eprintln!("tollgate listening on http://{local}");
    // Small responses must not wait on Nagle's algorithm and delayed ACKs.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let accountant = gw.accountant.clone();
    let app = router(ctx, gw, settings.public_url.as_deref())
        // The peer address, for bounding failed sign-ins per address.
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| CliError::Other(format!("server error: {e}")));
    // Give unspent leases back and write the last ledger rows.
    accountant.close(std::time::Duration::from_secs(5)).await;
    served
}

fn context(
    settings: &Resolved,
    loaded: LoadedConfig,
    db: sea_orm::DatabaseConnection,
    generation: i64,
    local: std::net::SocketAddr,
) -> AppContext {
    AppContext {
        leptos_options: leptos_options(&local.to_string()),
        db,
        config: Arc::new(ArcSwap::from_pointee(loaded)),
        config_path: settings.config_path.clone(),
        public_url: settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}")),
        reload: Arc::new(ArcSwap::from_pointee(ReloadStatus {
            generation,
            applied_at: now_ms(),
            last_reload_ok: true,
            last_error: None,
            failures: 0,
        })),
        apply_lock: Arc::new(tokio::sync::Mutex::new(())),
        balancer: app::ssr::balancer::Balancer::default(),
        setup_token: Arc::new(std::sync::Mutex::new(None)),
    }
}

/// With no admin yet, prints a one-time address for creating the first.
async fn offer_setup(ctx: &AppContext) -> Result<(), CliError> {
    if !app::ssr::owners::admin_exists(&ctx.db).await? {
        let token = app::ssr::session::new_token().map_err(CliError::Other)?;
        let url = format!("{}/setup?token={token}", ctx.public_url);
        tracing::warn!("no admin exists yet; create the first one at {url}");
        eprintln!("tollgate setup address: {url}");
        if let Ok(mut t) = ctx.setup_token.lock() {
            *t = Some(token);
        }
    }
    Ok(())
}

/// The client for upstream model servers.
fn http_client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| CliError::Other(format!("cannot build the HTTP client: {e}")))
}

/// Charges leases left by a process that stopped without returning them: at
/// start-up, then every half minute.
fn spawn_orphan_sweep(db: sea_orm::DatabaseConnection) {
    tokio::spawn(async move {
        loop {
            match app::ssr::ledger::sweep_orphans(&db, now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!("charged {n} orphaned leases in full")
                }
                Err(e) => tracing::error!("orphan sweep failed: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
    });
}

/// Deletes stored Responses API responses past their retention: at
/// start-up, then every ten minutes. Reads already ignore them; this only
/// gives the space back.
fn spawn_response_purge(db: sea_orm::DatabaseConnection) {
    tokio::spawn(async move {
        loop {
            match app::ssr::responses::purge(&db, now_ms()).await {
                Ok(0) => tracing::debug!("purged 0 expired stored responses"),
                Ok(n) => tracing::info!("purged {n} expired stored responses"),
                Err(e) => tracing::error!("purging expired stored responses failed: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
