//! Budget alerts on the admins' `/config` page: where alerts go, at which
//! thresholds, and what became of the recent deliveries.

use super::api::alert_overview;
use super::widgets::*;
use crate::domain::time::short;
use crate::view::{AlertDeliveryRow, AlertsReport};
use leptos::prelude::*;

#[component]
pub fn AlertsCard() -> impl IntoView {
    let report = Resource::new(|| (), |_| alert_overview());
    view! {
        <section class="card" data-testid="alerts">
            <h2>"Budget alerts"</h2>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match report.await {
                        Err(e) => view! { <ErrorNote message=server_error_text(&e)/> }.into_any(),
                        Ok(r) => alerts_view(r).into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

fn alerts_view(r: AlertsReport) -> impl IntoView {
    let thresholds = r
        .thresholds
        .iter()
        .map(|t| format!("{t} %"))
        .collect::<Vec<_>>()
        .join(", ");
    view! {
        {if r.configured {
            view! {
                <dl class="facts">
                    <dt>"Thresholds"</dt><dd data-testid="alert-thresholds">{thresholds}" of max used"</dd>
                    <dt>"Webhooks"</dt>
                    <dd><ul data-testid="alert-targets">{r.targets.into_iter().map(|t| view! { <li><code>{t}</code></li> }).collect_view()}</ul></dd>
                </dl>
            }.into_any()
        } else {
            view! { <p class="muted">"No "<code>"alerts:"</code>" section: no budget alerts are sent."</p> }.into_any()
        }}
        {if r.deliveries.is_empty() {
            view! { <p class="muted">"No alert has been sent yet."</p> }.into_any()
        } else {
            view! {
                <table data-testid="alert-deliveries">
                    <thead><tr><th>"Time"</th><th>"Owner"</th><th>"Threshold"</th><th>"Target"</th><th>"Status"</th><th>"Attempts"</th><th>"Last error"</th></tr></thead>
                    <tbody>{r.deliveries.into_iter().map(delivery_row).collect_view()}</tbody>
                </table>
            }.into_any()
        }}
    }
}

fn delivery_row(d: AlertDeliveryRow) -> impl IntoView {
    let class = format!("delivery-{}", d.status);
    view! {
        <tr data-testid="alert-delivery" class=class>
            <td>{short(d.created_at)}</td>
            <td>{d.owner}</td>
            <td>{format!("{} %", d.threshold_percent)}</td>
            <td><code>{d.target}</code></td>
            <td data-testid="alert-status">{d.status}</td>
            <td>{d.attempts}</td>
            <td>{d.last_error.unwrap_or_default()}</td>
        </tr>
    }
}
