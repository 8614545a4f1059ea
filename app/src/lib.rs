//! Tollgate's shared crate: pure domain logic, the Leptos UI and its server
//! functions (shared by the server and the browser), and, behind the `ssr`
//! feature, the storage and services the server uses.

pub mod domain;
pub mod ui;

#[cfg(feature = "ssr")]
pub mod ssr;

pub use ui::{shell, App};
