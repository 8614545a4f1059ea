//! The usage explorer (`/usage`): spend per day stacked by client, user or
//! model, the top spenders, CSV exports, and the calls behind any group and
//! day (`/usage/calls`). Admins see everything, managers their clients; the
//! server decides, the page only shows what it was sent.

use super::api::*;
use super::widgets::*;
use crate::domain::money::format_coins;
use crate::domain::spend::{html_escape, Grouping};
use crate::domain::text::percent_encode;
use crate::domain::time::short;
use crate::view::*;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;

const COLORS: [&str; 9] = [
    "#4f46e5", "#0891b2", "#ca8a04", "#db2777", "#16a34a", "#9333ea", "#ea580c", "#0d9488",
    "#9ca3af",
];

/// The query string of a drill-down: the group's name and a range.
fn calls_query(group: Grouping, name: Option<&str>, from: &str, to: &str) -> String {
    let name = name.map_or(String::new(), |n| format!("&name={}", percent_encode(n)));
    format!(
        "from={}&to={}&group={}{name}",
        percent_encode(from),
        percent_encode(to),
        group.as_str()
    )
}

fn query_value(key: &'static str) -> impl Fn() -> String + Copy + Send + Sync + 'static {
    let query = use_query_map();
    move || query.read().get(key).unwrap_or_default()
}

#[component]
pub fn UsagePage() -> impl IntoView {
    let (from, to, group) = (query_value("from"), query_value("to"), query_value("group"));
    let report = Resource::new(
        move || (from(), to(), group()),
        |(f, t, g)| usage_report(f, t, g),
    );
    view! {
        <h1>"Usage"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match report.await {
                    Err(e) => view! {
                        <RangeForm from=from() to=to() group=Grouping::parse(&group()).unwrap_or(Grouping::Client)/>
                        <section class="card"><ErrorNote message=server_error_text(&e)/></section>
                    }.into_any(),
                    Ok(r) => view! { <UsageBody r/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// A plain GET form, so it works before the page is interactive.
#[component]
fn RangeForm(from: String, to: String, group: Grouping) -> impl IntoView {
    view! {
        <section class="card">
            <form method="get" action="/usage" class="inline-form" data-testid="usage-form">
                <label>"From" <input type="date" name="from" value=from/></label>
                <label>"To" <input type="date" name="to" value=to/></label>
                <label>"Group by" <select name="group">
                    {Grouping::ALL.into_iter().map(|g| view! { <option value=g.as_str() selected=g == group>{g.as_str()}</option> }).collect_view()}
                </select></label>
                <button type="submit">"Show"</button>
            </form>
            <p class="muted">"UTC days, both included, at most 400. Amounts are in coins. The chart and the totals come from the daily roll-up, the calls from the ledger; calls include refused ones and leases charged in full."</p>
        </section>
    }
}

#[component]
fn UsageBody(r: SpendReport) -> impl IntoView {
    let all = calls_query(r.group, None, &r.from, &r.to);
    let daily = format!("/usage.csv?{all}");
    let calls = format!("/usage/calls.csv?{all}");
    let svg = chart_svg(&r);
    view! {
        <RangeForm from=r.from.clone() to=r.to.clone() group=r.group/>
        <section class="card">
            <h2>{format!("Coins per day by {}", r.group.as_str())}</h2>
            <p data-testid="usage-total">{format!(
                "{} coins, {} calls ({} refused), {} {}{}, {} to {}",
                format_coins(r.total.coins), r.total.calls, r.total.refused, r.groups, r.group.as_str(),
                if r.groups == 1 { "" } else { "s" }, r.from, r.to
            )}</p>
            {if r.total.calls == 0 {
                view! { <p class="empty">"No calls in this range."</p> }.into_any()
            } else {
                view! { <div class="usage-chart" data-testid="usage-chart" inner_html=svg></div><Legend r=r.clone()/> }.into_any()
            }}
            <p>
                <a href=daily download="usage.csv" rel="external" data-testid="daily-csv">"Daily spend (CSV)"</a>
                " · "
                <a href=calls download="calls.csv" rel="external" data-testid="calls-csv">"Every call (CSV)"</a>
                " · "
                <A href=format!("/usage/calls?{all}")>"Every call"</A>
            </p>
        </section>
        <TopSpenders r/>
    }
}

#[component]
fn Legend(r: SpendReport) -> impl IntoView {
    view! {
        <ul class="legend">
            {r.series.iter().enumerate().map(|(i, s)| {
                let color = format!("background:{}", COLORS[i.min(COLORS.len() - 1)]);
                let label = format!("{}: {}", s.group.label, format_coins(s.group.spend.coins));
                let link = s.group.name.as_deref().map(|n| format!("/usage/calls?{}", calls_query(r.group, Some(n), &r.from, &r.to)));
                view! {
                    <li>
                        <span class="swatch" style=color></span>
                        {match link {
                            Some(href) => view! { <A href=href>{label}</A> }.into_any(),
                            None => view! { <span>{label}</span> }.into_any(),
                        }}
                    </li>
                }
            }).collect_view()}
        </ul>
    }
}

/// The stacked bars as SVG markup: one bar per day, one segment per group,
/// each a link to that group's calls on that day.
fn chart_svg(r: &SpendReport) -> String {
    let days = r.days.len().max(1);
    let tallest = (0..days)
        .map(|d| {
            r.series
                .iter()
                .map(|s| s.per_day.get(d).copied().unwrap_or(0))
                .sum::<i64>()
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {} 100\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"Coins spent per day, stacked by {}; the tallest bar is {} coins\">",
        days * 10,
        r.group.as_str(),
        format_coins(tallest)
    );
    for (d, day) in r.days.iter().enumerate() {
        let mut y = 100.0;
        for (i, s) in r.series.iter().enumerate() {
            let coins = s.per_day.get(d).copied().unwrap_or(0);
            if coins <= 0 {
                continue;
            }
            let h = coins as f64 / tallest as f64 * 100.0;
            y -= h;
            let title = html_escape(&format!(
                "{day}: {} {} coins",
                s.group.label,
                format_coins(coins)
            ));
            let rect = format!(
                "<rect x=\"{}\" y=\"{y:.2}\" width=\"8\" height=\"{h:.2}\" fill=\"{}\"><title>{title}</title></rect>",
                d * 10,
                COLORS[i.min(COLORS.len() - 1)]
            );
            match s.group.name.as_deref() {
                Some(n) => out.push_str(&format!(
                    "<a href=\"/usage/calls?{}\">{rect}</a>",
                    html_escape(&calls_query(r.group, Some(n), day, day))
                )),
                None => out.push_str(&rect),
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[component]
fn TopSpenders(r: SpendReport) -> impl IntoView {
    if r.top.is_empty() {
        return ().into_any();
    }
    let group = r.group;
    view! {
        <section class="card">
            <h2>"Top spenders"</h2>
            <table data-testid="top-spenders">
                <thead><tr><th>{group.as_str()}</th><th>"Coins"</th><th>"Calls"</th><th>"Refused"</th><th>"Tokens in"</th><th>"Tokens out"</th></tr></thead>
                <tbody>
                    {r.top.into_iter().map(|g| {
                        let (label, shown) = (g.label.clone(), g.label.clone());
                        let cell = match g.name.as_deref() {
                            Some(n) => {
                                let href = format!("/usage/calls?{}", calls_query(group, Some(n), &r.from, &r.to));
                                view! { <A href=href>{shown}</A> }.into_any()
                            }
                            None => view! { <span>{shown}</span> }.into_any(),
                        };
                        view! {
                            <tr data-group=label>
                                <td>{cell}</td>
                                <td data-testid="coins">{format_coins(g.spend.coins)}</td>
                                <td>{g.spend.calls}</td>
                                <td>{g.spend.refused}</td>
                                <td>{g.spend.tokens_in}</td>
                                <td>{g.spend.tokens_out}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
    .into_any()
}

#[component]
pub fn UsageCallsPage() -> impl IntoView {
    let query = use_query_map();
    let (from, to, group) = (query_value("from"), query_value("to"), query_value("group"));
    let name = move || query.read().get("name");
    let before = move || query.read().get("before");
    let page = Resource::new(
        move || (from(), to(), group(), name(), before()),
        |(f, t, g, n, b)| usage_calls(f, t, g, n, b),
    );
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Err(e) => view! {
                        <section class="card"><h1>"Calls"</h1><ErrorNote message=server_error_text(&e)/><p><A href="/usage">"Back to usage"</A></p></section>
                    }.into_any(),
                    Ok(p) => view! { <CallsBody p/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn CallsBody(p: CallsPage) -> impl IntoView {
    let which = match &p.name {
        Some(n) => format!("{} {n}", p.group.as_str()),
        None => format!("every {}", p.group.as_str()),
    };
    let here = calls_query(p.group, p.name.as_deref(), &p.from, &p.to);
    let back = calls_query(p.group, None, &p.from, &p.to);
    let older = p
        .next
        .as_ref()
        .map(|c| format!("/usage/calls?{here}&before={}", percent_encode(c)));
    view! {
        <h1>{format!("Calls: {which}, {} to {}", p.from, p.to)}</h1>
        <section class="card">
            <p>
                <A href=format!("/usage?{back}")>"← Usage"</A>
                " · "
                <a href=format!("/usage/calls.csv?{here}") download="calls.csv" rel="external">"These calls (CSV)"</a>
            </p>
            {if p.rows.is_empty() {
                view! { <p class="empty">"No calls."</p> }.into_any()
            } else {
                view! { <CallsTable rows=p.rows/> }.into_any()
            }}
            <nav class="pager" aria-label="Pages">
                <A href=format!("/usage/calls?{here}")>"Newest"</A>
                {older.map(|href| view! { <A href=href attr:data-testid="older">"Older →"</A> })}
            </nav>
        </section>
    }
}

#[component]
fn CallsTable(rows: Vec<CallRow>) -> impl IntoView {
    view! {
        <table data-testid="calls">
            <thead><tr><th>"When"</th><th>"Owner"</th><th>"Model"</th><th>"Tokens in/out"</th><th>"Coins"</th><th>"Outcome"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|c| {
                    let r = c.row;
                    let explained = view! { <ChargeSum e=r.explain()/> };
                    view! {
                        <tr data-call=c.id.to_string()>
                            <td>{short(r.at)}</td>
                            <td>{c.owner}</td>
                            <td>{r.model}</td>
                            <td>{format!("{} / {}", r.usage.input_total(), r.usage.output)}</td>
                            <td>
                                <details class="charge">
                                    <summary>{format_coins(r.coins)}</summary>
                                    {explained}
                                </details>
                            </td>
                            <td title=r.outcome><code>{r.code}</code></td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
