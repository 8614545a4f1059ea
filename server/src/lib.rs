//! The `tollgate` server as a library: the binary in `main.rs` only parses
//! arguments and calls [`commands::run`]; tests can build the router with
//! [`serve::router`].
//!
//! Dependencies point one way: `commands` → `serve` → (`reconciler`,
//! `alerts`, `gateway`, `health`, `metrics`, `oidc`, `openapi`, `origin`, `body_limit`, `site`, `usage_csv`) → `startup` → `error`, with
//! `args` at the bottom.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod alerts;
pub mod args;
pub mod audit_csv;
pub mod body_limit;
pub mod commands;
pub mod error;
pub mod gateway;
pub mod health;
pub mod keys_cli;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod origin;
pub mod reconciler;
pub mod serve;
pub mod site;
pub mod startup;
pub mod usage_csv;
