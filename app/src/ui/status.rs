//! The config status shown on the start page.

pub use crate::view::ConfigSummary;
use leptos::prelude::*;

/// Public: the same facts `/healthz` reports, without the error text.
#[server(prefix = "/api", endpoint = "config_status")]
pub async fn config_status() -> Result<ConfigSummary, ServerFnError> {
    let ctx = crate::ssr::guard::ctx()?;
    crate::ssr::console::config_summary(&ctx)
        .await
        .map_err(|_| ServerFnError::new("the database is unavailable"))
}
