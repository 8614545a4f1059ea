//! Tollgate's shared crate: pure domain logic, the data pages are sent
//! (`view`), the Leptos UI and its server functions (shared by the server and
//! the browser), and, behind the `ssr` feature, the storage and services the
//! server uses. Dependencies point one way: `ui` → `view`, `domain` (and
//! `ssr`, inside server-function bodies only); `ssr` → `view`, `domain`;
//! nothing in `ssr`, `view` or `domain` imports `ui`.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod domain;
pub mod ui;
pub mod view;

#[cfg(feature = "ssr")]
pub mod ssr;

pub use ui::{shell, App};
