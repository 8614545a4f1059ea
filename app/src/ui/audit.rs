//! `/audit`, for admins: the audit trail, newest first, filtered by actor,
//! action, target and dates, 50 entries a page, with a CSV export of the
//! same filter.

use super::api::audit_log;
use super::widgets::*;
use crate::domain::audit::{Action, AuditFilter};
use crate::domain::time::{rfc3339, short};
use crate::view::*;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// The filter and cursor in the page's address.
fn from_query(get: impl Fn(&str) -> String) -> (AuditFilter, i64, i64) {
    let filter = AuditFilter {
        actor: get("actor"),
        action: get("action"),
        target: get("target"),
        from: get("from"),
        to: get("to"),
    };
    let num = |k: &str| get(k).parse::<i64>().unwrap_or(0).max(0);
    (filter, num("before"), num("after"))
}

/// `/audit?…` with the filter and one more parameter.
fn link(filter: &AuditFilter, extra: &str) -> String {
    let qs = filter.query_string();
    match (qs.is_empty(), extra.is_empty()) {
        (true, true) => "/audit".into(),
        (true, false) => format!("/audit?{extra}"),
        (false, true) => format!("/audit?{qs}"),
        (false, false) => format!("/audit?{qs}&{extra}"),
    }
}

#[component]
pub fn AuditTrailPage() -> impl IntoView {
    let query = use_query_map();
    let state = move || from_query(|k| query.read().get(k).unwrap_or_default());
    let entries = Resource::new(state, |(f, before, after)| {
        audit_log(f.actor, f.action, f.target, f.from, f.to, before, after)
    });
    view! {
        <h1>"Audit trail"</h1>
        <p class="muted">"Every console action, sign-in and config reload, newest first. Times are UTC. "<code>"tollgate audit verify"</code>" checks that no entry was changed or removed."</p>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                let (filter, _, _) = state();
                Suspend::new(async move {
                    match entries.await {
                        Err(e) => view! {
                            <section class="card">
                                <ErrorNote message=server_error_text(&e)/>
                                {(!filter.query_string().is_empty()).then(|| view! { <p><a href="/audit">"Clear the filter"</a></p> })}
                            </section>
                        }.into_any(),
                        Ok(page) => view! {
                            <FilterForm filter=filter.clone()/>
                            <AuditTable page filter/>
                        }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

#[component]
fn FilterForm(filter: AuditFilter) -> impl IntoView {
    let csv = match filter.query_string() {
        qs if qs.is_empty() => "/audit.csv".to_string(),
        qs => format!("/audit.csv?{qs}"),
    };
    let current = filter.action.clone();
    view! {
        <section class="card">
            <form method="get" action="/audit" class="inline-form" data-testid="audit-filter">
                <label>"Actor" <input name="actor" value=filter.actor.clone() placeholder="a username, cli or config"/></label>
                <label>"Action"
                    <select name="action">
                        <option value="" selected=current.is_empty()>"any"</option>
                        {Action::ALL.into_iter().map(|a| view! {
                            <option value=a.as_str() selected=current == a.as_str()>{a.as_str()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>"Target contains" <input name="target" value=filter.target.clone() placeholder="client:acme"/></label>
                <label>"From" <input name="from" type="date" value=filter.from.clone()/></label>
                <label>"To" <input name="to" type="date" value=filter.to.clone()/></label>
                <button type="submit">"Filter"</button>
                <a href="/audit">"Clear"</a>
            </form>
            <p><a href=csv rel="external" download="tollgate-audit.csv" data-testid="audit-csv">"Export these entries as CSV"</a></p>
        </section>
    }
}

#[component]
fn AuditTable(page: AuditPage, filter: AuditFilter) -> impl IntoView {
    let pager = view! {
        <nav class="pager" aria-label="Pages">
            {page.newer.map(|s| view! { <a href=link(&filter, &format!("after={s}"))>"← Newer"</a> })}
            {page.older.map(|s| view! { <a href=link(&filter, &format!("before={s}"))>"Older →"</a> })}
        </nav>
    };
    let body = if page.rows.is_empty() {
        view! { <p class="empty">"No entries match."</p> }.into_any()
    } else {
        view! {
            <table data-testid="audit">
                <thead><tr><th>"#"</th><th>"Time"</th><th>"Actor"</th><th>"Action"</th><th>"Target"</th><th>"Address"</th><th>"Detail"</th></tr></thead>
                <tbody>
                    {page.rows.into_iter().map(|r| { let action = r.action.clone(); view! {
                        <tr data-testid="audit-row" data-action=action>
                            <td>{r.seq}</td>
                            <td title=rfc3339(r.at_ms)>{short(r.at_ms)}</td>
                            <td>{r.actor}</td>
                            <td><code>{r.action}</code></td>
                            <td>{r.target}</td>
                            <td>{r.addr}</td>
                            <td>{r.detail}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
        }
        .into_any()
    };
    view! { <section class="card">{body}{pager}</section> }
}
