//! What a config file would change against the database, owner by owner,
//! like `terraform plan`: the coins that can be spent, max and refresh, the
//! verdict for each model, and whether a named entry or the defaults apply.
//! Computed with the same rules the sync applies (`pool::with_settings`,
//! `AccessPolicy::decide`), so the plan is what happens.

use super::config::{Config, OwnerSettings, PoolLimit, SettingsSource};
use super::money::format_coins;
use super::policy::{AccessPolicy, Verdict};
use super::pool::{initial_balance, refilled, with_settings, PoolState};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// One existing client or user as the database has it now.
#[derive(Debug, Clone)]
pub struct Current {
    /// `client` or `user`.
    pub kind: &'static str,
    pub name: String,
    /// The pool with leases counted in, if it exists.
    pub pool: Option<PoolState>,
    /// The access policy last synced, and where it came from.
    pub access: Option<(AccessPolicy, SettingsSource)>,
}

/// One fact before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub what: String,
    pub before: String,
    pub after: String,
}

impl Line {
    pub fn changes(&self) -> bool {
        self.before != self.after
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerPlan {
    pub kind: String,
    pub name: String,
    pub lines: Vec<Line>,
}

impl OwnerPlan {
    pub fn changes(&self) -> bool {
        self.lines.iter().any(Line::changes)
    }
}

fn limit_text(l: PoolLimit) -> String {
    match l {
        PoolLimit::Unlimited => "unlimited".into(),
        PoolLimit::Limited(0) => "0 (blocked)".into(),
        PoolLimit::Limited(m) => format_coins(m),
    }
}

fn coins_text(st: &PoolState) -> String {
    let available = if st.limit.is_blocked() { 0 } else { st.balance };
    let held = st.balance + st.held - available;
    if st.limit == PoolLimit::Unlimited {
        "unlimited".into()
    } else if held > 0 {
        format!(
            "{} ({} held back)",
            format_coins(available),
            format_coins(held)
        )
    } else {
        format_coins(available)
    }
}

fn verdict_text(policy: &AccessPolicy, model: &str) -> String {
    let d = policy.decide(model, false);
    let v = match d.verdict {
        Verdict::Allowed => "allowed",
        Verdict::Denied => "denied",
        Verdict::ConsentRequired => "consent needed",
    };
    format!("{v} ({})", d.rule)
}

fn line(what: &str, before: String, after: String) -> Line {
    Line {
        what: what.into(),
        before,
        after,
    }
}

/// Coins, max and refresh, before and after.
fn pool_lines(current: Option<&PoolState>, settings: &OwnerSettings, now: i64) -> Vec<Line> {
    let Some(st) = current else {
        let absent = || "no pool yet".to_string();
        let st = PoolState {
            limit: settings.pool.limit,
            refresh_micro: settings.pool.refresh_micro,
            balance: initial_balance(&settings.pool),
            refilled_at: now,
            held: 0,
        };
        return vec![
            line("coins available", absent(), coins_text(&st)),
            line("max", absent(), limit_text(settings.pool.limit)),
            line(
                "refresh per hour",
                absent(),
                format_coins(settings.pool.refresh_micro),
            ),
        ];
    };
    let before = refilled(st, now);
    let after = if before.limit == settings.pool.limit
        && before.refresh_micro == settings.pool.refresh_micro
    {
        before
    } else {
        with_settings(&before, &settings.pool, now)
    };
    vec![
        line("coins available", coins_text(&before), coins_text(&after)),
        line("max", limit_text(before.limit), limit_text(after.limit)),
        line(
            "refresh per hour",
            format_coins(before.refresh_micro),
            format_coins(after.refresh_micro),
        ),
    ]
}

fn owner_plan(
    current: &Current,
    settings: &OwnerSettings,
    source: SettingsSource,
    config: &Config,
    now: i64,
) -> OwnerPlan {
    let nothing = || "nothing yet".to_string();
    let mut lines = vec![line(
        "settings from",
        current
            .access
            .as_ref()
            .map_or_else(nothing, |(_, s)| s.as_str().to_string()),
        source.as_str().to_string(),
    )];
    lines.extend(pool_lines(current.pool.as_ref(), settings, now));
    for model in config.models.keys() {
        let before = current
            .access
            .as_ref()
            .map_or_else(nothing, |(p, _)| verdict_text(p, model));
        lines.push(line(
            &format!("model {model}"),
            before,
            verdict_text(&settings.access, model),
        ));
    }
    OwnerPlan {
        kind: current.kind.to_string(),
        name: current.name.clone(),
        lines,
    }
}

/// The plan for every existing owner, in the order given.
pub fn plan(current: &[Current], config: &Config, now: i64) -> Vec<OwnerPlan> {
    current
        .iter()
        .map(|c| {
            let section = if c.kind == "client" {
                &config.clients
            } else {
                &config.users
            };
            let (settings, source) = section.settings_for(&c.name);
            owner_plan(c, settings, source, config, now)
        })
        .collect()
}

/// The plan as text: `~` marks what changes; owners with no change are
/// listed on one line.
pub fn render(plans: &[OwnerPlan]) -> String {
    let mut out = String::new();
    let changing = plans.iter().filter(|p| p.changes()).count();
    for p in plans.iter().filter(|p| p.changes()) {
        let _ = writeln!(out, "{} {}:", p.kind, p.name);
        for l in &p.lines {
            if l.changes() {
                let _ = writeln!(out, "  ~ {}: {} -> {}", l.what, l.before, l.after);
            } else {
                let _ = writeln!(out, "    {}: {}", l.what, l.after);
            }
        }
    }
    let same: Vec<String> = plans
        .iter()
        .filter(|p| !p.changes())
        .map(|p| format!("{} {}", p.kind, p.name))
        .collect();
    if !same.is_empty() {
        let _ = writeln!(out, "unchanged: {}", same.join(", "));
    }
    let _ = writeln!(
        out,
        "Plan: {changing} of {} clients and users change.",
        plans.len()
    );
    out
}

/// Where each model's calls go, as `check-config` explains it: its one
/// upstream, or its deployments with their weights and limits, and its
/// fallbacks.
pub fn models_text(config: &Config) -> String {
    use super::deployment::Provider;
    let mut out = String::new();
    for (name, m) in &config.models {
        let upstream = |p: &Provider| match p {
            Provider::Dummy => "the built-in dummy".to_string(),
            Provider::OpenAi {
                base_url,
                upstream_model,
                native_responses,
                ..
            } => format!(
                "openai {base_url} as `{upstream_model}`{}",
                if *native_responses {
                    ", Responses API native"
                } else {
                    ""
                }
            ),
            Provider::Anthropic {
                base_url,
                upstream_model,
                ..
            } => {
                format!("anthropic {base_url} as `{upstream_model}`")
            }
        };
        match m.deployments.as_slice() {
            [one] if m.deployments.len() == 1 && one.name == "default" => {
                let _ = writeln!(
                    out,
                    "model {name}: one upstream, {}",
                    upstream(&one.provider)
                );
            }
            list => {
                let _ = writeln!(out, "model {name}: {} deployments, weighted least-outstanding routing, retried on another before the first byte", list.len());
                for d in list {
                    let limit = d
                        .max_in_flight
                        .map(|n| format!(", at most {n} in flight"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {}: {} (weight {}{limit})",
                        d.name,
                        upstream(&d.provider),
                        d.weight
                    );
                }
            }
        }
        if !m.fallbacks.is_empty() {
            let _ = writeln!(
                out,
                "  falls back to: {} (each under the caller's own access and price)",
                m.fallbacks.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::PoolSettings;
    use crate::domain::money::MICRO;

    fn cfg(max: i64) -> Config {
        let mut c = Config::default();
        c.clients.default = OwnerSettings {
            pool: PoolSettings {
                limit: PoolLimit::Limited(max),
                refresh_micro: 0,
                starting_micro: 0,
            },
            access: AccessPolicy::deny_all(),
            rate_limits: crate::domain::rate::RateLimits::NONE,
        };
        c
    }

    fn current(balance: i64, max: i64) -> Current {
        Current {
            kind: "client",
            name: "bot".into(),
            pool: Some(PoolState {
                limit: PoolLimit::Limited(max),
                refresh_micro: 0,
                balance,
                refilled_at: 0,
                held: 0,
            }),
            access: Some((AccessPolicy::deny_all(), SettingsSource::Default)),
        }
    }

    #[test]
    fn a_blocking_file_shows_coins_held_back_not_lost() {
        let config = cfg(0);
        let plans = plan(&[current(40 * MICRO, 100 * MICRO)], &config, 0);
        let text = render(&plans);
        assert!(
            text.contains("~ coins available: 40 -> 0 (40 held back)"),
            "{text}"
        );
        assert!(text.contains("~ max: 100 -> 0 (blocked)"), "{text}");
        assert!(text.contains("Plan: 1 of 1"), "{text}");
    }

    #[test]
    fn the_same_settings_change_nothing() {
        let config = cfg(100 * MICRO);
        let plans = plan(&[current(40 * MICRO, 100 * MICRO)], &config, 0);
        assert!(!plans[0].changes(), "{plans:?}");
        assert!(render(&plans).contains("unchanged: client bot"));
    }
}
