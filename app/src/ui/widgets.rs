//! Small pieces shared by the pages.

use crate::domain::explain::Explanation;
use crate::domain::money::format_coins;
use crate::domain::time::short;
use crate::view::*;
use leptos::prelude::*;

/// An inline error from a server function.
#[component]
pub fn ErrorNote(message: String) -> impl IntoView {
    let text = message
        .trim_start_matches("error running server function: ")
        .trim_start_matches("ServerError|")
        .to_string();
    view! { <p class="error" role="alert">{text}</p> }
}

pub fn server_error_text(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Shows the result of an action: nothing, an error, or `ok` text.
pub fn action_result<T, S>(value: S, ok: &'static str) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    S: Get<Value = Option<Result<T, ServerFnError>>> + Send + Sync + 'static,
{
    move || match value.get() {
        Some(Err(e)) => view! { <ErrorNote message=server_error_text(&e)/> }.into_any(),
        Some(Ok(_)) if !ok.is_empty() => view! { <p class="ok" role="status">{ok}</p> }.into_any(),
        _ => ().into_any(),
    }
}

#[component]
pub fn Gauge(pool: Option<PoolView>) -> impl IntoView {
    match pool {
        None => view! { <span class="muted">"no pool"</span> }.into_any(),
        Some(p) if p.max.is_none() => {
            view! { <span class="badge unlimited" data-testid="balance">"unlimited"</span> }
                .into_any()
        }
        Some(p) if p.blocked() => {
            view! { <span class="badge blocked" data-testid="balance">"blocked"</span> }.into_any()
        }
        Some(p) => {
            let max = p.max.unwrap_or(1).max(1);
            let pct = (p.balance as f64 / max as f64 * 100.0).clamp(0.0, 100.0);
            view! {
                <span class="gauge" title=format!("{:.0}% of max", pct)>
                    <span class="gauge-bar"><span class="gauge-fill" style=format!("width:{pct:.1}%")></span></span>
                    <span data-testid="balance">{format_coins(p.balance)}</span>
                    " / "
                    <span data-testid="max">{format_coins(max)}</span>
                </span>
            }
            .into_any()
        }
    }
}

pub fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_string(), short)
}

#[component]
pub fn PoolPanel(pool: Option<PoolView>, source: String) -> impl IntoView {
    let body = match pool.clone() {
        None => view! { <p>"This owner has no coin pool yet."</p> }.into_any(),
        Some(p) => view! {
            <dl class="facts">
                <dt>"Balance"</dt><dd><Gauge pool=Some(p.clone())/></dd>
                {(p.held > 0).then(|| view! {
                    <dt>"Held back"</dt>
                    <dd data-testid="held">{format!(
                        "{} more coins are stored ({} in all) but out of reach under the current max; raising max gives them back",
                        format_coins(p.held),
                        format_coins(p.balance + p.held)
                    )}</dd>
                })}
                <dt>"Max"</dt><dd>{p.max.map_or("unlimited (-2)".into(), |m| if m == 0 { "0 (blocked)".into() } else { format_coins(m) })}</dd>
                <dt>"Refresh"</dt><dd>{format!("{} coins per hour", format_coins(p.refresh))}</dd>
                <dt>"Starting"</dt><dd>{format_coins(p.starting)}</dd>
                <dt>"Full again"</dt><dd>{match (p.max, p.full_at) {
                    (None, _) => "never limited".to_string(),
                    (Some(_), None) => "never (no refresh)".to_string(),
                    (Some(m), Some(_)) if p.balance >= m => "full now".to_string(),
                    (Some(_), Some(t)) => short(t),
                }}</dd>
                <dt>"Settings from"</dt><dd data-testid="settings-source">{source}</dd>
            </dl>
        }
        .into_any(),
    };
    view! { <section class="card"><h2>"Coin pool"</h2>{body}</section> }
}

#[component]
pub fn UsagePanel(usage: Vec<DayUsage>, recent: Vec<LedgerRow>) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"Usage"</h2>
            <UsageChart usage=usage/>
            <h3>"Recent calls"</h3>
            <RecentCalls recent=recent/>
        </section>
    }
}

/// Coins spent per day over 30 days, stacked by model.
#[component]
fn UsageChart(usage: Vec<DayUsage>) -> impl IntoView {
    if usage.is_empty() {
        return view! { <p class="muted">"No coins spent in the last 30 days."</p> }.into_any();
    }
    let max_day = usage
        .iter()
        .map(|d| d.by_model.iter().map(|(_, c)| *c).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut models: Vec<String> = usage
        .iter()
        .flat_map(|d| d.by_model.iter().map(|(n, _)| n.clone()))
        .collect();
    models.sort();
    models.dedup();
    let color = move |name: &str| {
        let i = models.iter().position(|m| m == name).unwrap_or(0);
        [
            "#4f46e5", "#0891b2", "#ca8a04", "#db2777", "#16a34a", "#9333ea",
        ][i % 6]
    };
    let bars = usage
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut y = 100.0;
            d.by_model
                .iter()
                .map(|(m, c)| {
                    let h = *c as f64 / max_day as f64 * 100.0;
                    y -= h;
                    view! { <rect x=(i * 10).to_string() y=format!("{y:.2}") width="8" height=format!("{h:.2}") fill=color(m)><title>{format!("{}: {} {} coins", d.day, m, format_coins(*c))}</title></rect> }
                })
                .collect_view()
        })
        .collect_view();
    view! {
        <svg class="chart" viewBox=format!("0 0 {} 100", usage.len() * 10) preserveAspectRatio="none" role="img" aria-label="Coins spent per day over the last 30 days, by model">
            {bars}
        </svg>
    }
    .into_any()
}

/// The most recent calls, with the outcome's stable code (its detail on
/// hover) and each charge explained as a sum when its coins are opened.
#[component]
fn RecentCalls(recent: Vec<LedgerRow>) -> impl IntoView {
    if recent.is_empty() {
        return view! { <p class="muted">"No calls yet."</p> }.into_any();
    }
    view! {
        <table>
            <thead><tr><th>"When"</th><th>"Model"</th><th>"Tokens in/out"</th><th>"Coins"</th><th>"Outcome"</th></tr></thead>
            <tbody>
                {recent.into_iter().map(|r| {
                    let explained = view! { <ChargeSum e=r.explain()/> };
                    view! {
                        <tr>
                            <td>{short(r.at)}</td>
                            <td>{r.model}</td>
                            <td>{format!("{} / {}", r.usage.input_total(), r.usage.output)}</td>
                            <td>
                                <details class="charge" data-testid="charge">
                                    <summary>{format_coins(r.coins)}</summary>
                                    {explained}
                                </details>
                            </td>
                            <td title=r.outcome><code data-testid="outcome-code">{r.code}</code></td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// A charge as a sum: its lines, the total, and what was charged when that differs.
#[component]
pub fn ChargeSum(e: Explanation) -> impl IntoView {
    let charged = e
        .differs()
        .then(|| view! { <li class="charged">{e.charged_text()}</li> });
    view! {
        <ul class="charge-lines">
            {e.lines.iter().map(|l| view! { <li>{l.to_string()}</li> }).collect_view()}
            <li class="total">{e.total_text()}</li>
            {charged}
        </ul>
        {e.notes.into_iter().map(|n| view! { <p class="muted charge-note">{n}</p> }).collect_view()}
    }
}
