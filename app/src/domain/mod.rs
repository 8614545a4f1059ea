//! Pure domain logic: no I/O, no axum, no database types. Everything here is
//! unit-tested in milliseconds and compiles for the browser too, so the UI can
//! show exactly what the server computes.

pub mod alerts;
pub mod audit;
pub mod bound;
pub mod bound_items;
pub mod breaker;
pub mod config;
pub mod deployment;
pub mod explain;
pub mod keys;
pub mod lease;
pub mod money;
pub mod names;
pub mod oidc;
pub mod outcome;
pub mod owner;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod pricing;
pub mod rate;
pub mod spend;
pub mod text;
pub mod time;
pub mod usage;
