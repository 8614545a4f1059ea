//! The config status shown on the start page.

pub use crate::view::ConfigSummary;
use leptos::prelude::*;

/// Public: the same facts `/healthz` reports, without the error text.
#[server(prefix = "/api", endpoint = "config_status")]
pub async fn config_status() -> Result<ConfigSummary, ServerFnError> {
    use crate::ssr::{config_state, AppContext};
    let ctx = expect_context::<AppContext>();
    let row = config_state::get(&ctx.db)
        .await
        .map_err(|_| ServerFnError::new("the database is unavailable"))?;
    let snapshot = ctx.config.load();
    Ok(ConfigSummary {
        generation: row.as_ref().map_or(0, |r| r.generation),
        applied_at: row.as_ref().map_or(0, |r| r.applied_at),
        last_reload_ok: row.as_ref().is_none_or(|r| r.last_reload_ok),
        models: snapshot.config.models.keys().cloned().collect(),
    })
}
