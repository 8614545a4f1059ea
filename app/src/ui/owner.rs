//! The page of one owner: a client (`/clients/{name}`) or the signed-in user (`/me`).

use super::api::*;
use super::widgets::*;
use crate::view::*;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[derive(Clone)]
struct Actions {
    consent_client: ServerAction<SetClientConsent>,
    consent_me: ServerAction<SetMyConsent>,
    key_client: ServerAction<CreateClientKey>,
    key_me: ServerAction<CreateMyKey>,
    revoke: ServerAction<RevokeKey>,
    add_manager: ServerAction<AddManager>,
    remove_manager: ServerAction<RemoveManager>,
}

impl Actions {
    fn new() -> Self {
        Actions {
            consent_client: ServerAction::new(),
            consent_me: ServerAction::new(),
            key_client: ServerAction::new(),
            key_me: ServerAction::new(),
            revoke: ServerAction::new(),
            add_manager: ServerAction::new(),
            remove_manager: ServerAction::new(),
        }
    }
    fn version(&self) -> usize {
        self.consent_client.version().get()
            + self.consent_me.version().get()
            + self.key_client.version().get()
            + self.key_me.version().get()
            + self.revoke.version().get()
            + self.add_manager.version().get()
            + self.remove_manager.version().get()
    }
}

#[component]
pub fn ClientPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let actions = Actions::new();
    let a = actions.clone();
    let detail = Resource::new(move || (name(), a.version()), |(n, _)| client_detail(n));
    view! { <OwnerView detail actions client=Signal::derive(move || Some(name()))/> }
}

#[component]
pub fn MePage() -> impl IntoView {
    let actions = Actions::new();
    let a = actions.clone();
    let detail = Resource::new(move || a.version(), |_| my_account());
    view! { <OwnerView detail actions client=Signal::derive(|| None)/> }
}

#[component]
fn OwnerView(
    detail: Resource<Result<OwnerDetail, ServerFnError>>,
    actions: Actions,
    client: Signal<Option<String>>,
) -> impl IntoView {
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                let actions = actions.clone();
                Suspend::new(async move {
                    match detail.await {
                        Err(e) => view! { <section class="card"><h1>"Not available"</h1><ErrorNote message=server_error_text(&e)/></section> }.into_any(),
                        Ok(d) => view! { <OwnerBody d actions client/> }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

#[component]
fn OwnerBody(d: OwnerDetail, actions: Actions, client: Signal<Option<String>>) -> impl IntoView {
    let is_client = d.kind == OwnerKind::Client;
    let title = match d.kind {
        OwnerKind::Client => format!("Client {}", d.name),
        OwnerKind::User => format!("My account ({})", d.name),
    };
    view! {
        <h1>{title}</h1>
        <div class="grid">
            <PoolPanel pool=d.pool.clone() source=d.source.clone()/>
            <ModelAccess models=d.models.clone() actions=actions.clone() client/>
        </div>
        <Keys keys=d.keys.clone() actions=actions.clone() client/>
        {is_client.then(|| view! { <Managers managers=d.managers.clone() editable=d.can_edit_managers actions=actions.clone() client/> })}
        <UsagePanel usage=d.usage.clone() recent=d.recent.clone()/>
    }
}

#[component]
fn ModelAccess(
    models: Vec<ModelAccessRow>,
    actions: Actions,
    client: Signal<Option<String>>,
) -> impl IntoView {
    let rows = models
        .into_iter()
        .map(|m| {
            let consent_form = m.consent_applies.then(|| {
                let model = m.model.clone();
                let notice = m.consent_notice.clone().unwrap_or_else(|| "No notice is configured for this model.".into());
                let consented = m.consented;
                let label = if consented { "Revoke consent" } else { "Record consent…" };
                let button = if consented { "Revoke consent" } else { "I consent" };
                let fields = view! {
                    <input type="hidden" name="model" value=model.clone()/>
                    <input type="hidden" name="consent" value=(!consented).to_string()/>
                    <button type="submit" aria-label=format!("{button} for {model}")>{button}</button>
                };
                let form = match client.get_untracked() {
                    Some(c) => view! {
                        <ActionForm action=actions.consent_client>
                            <input type="hidden" name="client" value=c/>
                            {fields}
                        </ActionForm>
                    }
                    .into_any(),
                    None => view! { <ActionForm action=actions.consent_me>{fields}</ActionForm> }.into_any(),
                };
                view! {
                    <details class="consent">
                        <summary>{label}</summary>
                        <p class="notice">{notice}</p>
                        {form}
                    </details>
                }
                .into_any()
            });
            let class = format!("verdict {}", m.verdict.replace(' ', "-"));
            view! {
                <tr data-model=m.model.clone()>
                    <td>{m.model.clone()}</td>
                    <td><span class=class data-testid="verdict">{m.verdict.clone()}</span></td>
                    <td class="muted">{m.rule.clone()}</td>
                    <td>{consent_form}</td>
                </tr>
            }
        })
        .collect_view();
    let err_c = actions.consent_client.value();
    let err_m = actions.consent_me.value();
    view! {
        <section class="card">
            <h2>"Model access"</h2>
            {action_result(err_c, "")}
            {action_result(err_m, "")}
            <table>
                <thead><tr><th>"Model"</th><th>"Access"</th><th>"Decided by"</th><th>"Consent"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }
}

#[component]
fn NewKey(shown: Option<Result<NewKeyShown, ServerFnError>>) -> impl IntoView {
    match shown {
        Some(Ok(k)) => view! {
            <div class="new-key" role="status">
                <p>"Copy this key now. It is shown only once; Tollgate stores just its hash."</p>
                <code data-testid="new-key">{k.secret.clone()}</code>
                " "
                <button type="button" data-key=k.secret onclick="navigator.clipboard && navigator.clipboard.writeText(this.dataset.key)">"Copy"</button>
            </div>
        }
        .into_any(),
        Some(Err(e)) => view! { <ErrorNote message=server_error_text(&e)/> }.into_any(),
        None => ().into_any(),
    }
}

/// A key's own limits, below its owner's; empty means the owner's alone.
#[component]
fn KeyLimitFields() -> impl IntoView {
    view! {
        <label>"Requests per minute" <input name="requests_per_minute" inputmode="numeric" placeholder="owner's limit"/></label>
        <label>"Tokens per minute" <input name="tokens_per_minute" inputmode="numeric" placeholder="owner's limit"/></label>
    }
}

fn limits_text(l: crate::domain::rate::RateLimits) -> String {
    let parts: Vec<String> = [
        l.requests_per_minute.map(|n| format!("{n} requests/min")),
        l.tokens_per_minute.map(|n| format!("{n} tokens/min")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "owner's".to_string()
    } else {
        parts.join(", ")
    }
}

#[component]
fn Keys(keys: Vec<KeyRow>, actions: Actions, client: Signal<Option<String>>) -> impl IntoView {
    // Until the page is interactive the form would be a plain post, whose
    // answer (the key, shown once) the browser would never display; the
    // server refuses such a post, and the button waits for hydration.
    let (ready, set_ready) = signal(false);
    Effect::new(move |_| set_ready.set(true));
    let form = match client.get_untracked() {
        Some(c) => view! {
            <ActionForm action=actions.key_client attr:class="inline-form">
                <input type="hidden" name="client" value=c/>
                <label>"Label" <input name="label" maxlength="100" placeholder="e.g. nightly pipeline"/></label>
                <label>"Expires in (days)" <input name="expires_days" inputmode="numeric" placeholder="never"/></label>
                <KeyLimitFields/>
                <button type="submit" disabled=move || !ready.get()>"Create key"</button>
            </ActionForm>
        }
        .into_any(),
        None => view! {
            <ActionForm action=actions.key_me attr:class="inline-form">
                <label>"Label" <input name="label" maxlength="100" placeholder="e.g. laptop"/></label>
                <label>"Expires in (days)" <input name="expires_days" inputmode="numeric" placeholder="never"/></label>
                <KeyLimitFields/>
                <button type="submit" disabled=move || !ready.get()>"Create key"</button>
            </ActionForm>
        }
        .into_any(),
    };
    let kc = actions.key_client.value();
    let km = actions.key_me.value();
    let revoke = actions.revoke;
    let list = if keys.is_empty() {
        view! { <p class="muted">"No keys yet."</p> }.into_any()
    } else {
        view! {
            <table>
                <thead><tr><th>"Prefix"</th><th>"Label"</th><th>"Created"</th><th>"Last used"</th><th>"Expires"</th><th>"Rate limits"</th><th>"State"</th></tr></thead>
                <tbody>
                    {keys.into_iter().map(|k| {
                        let revoke_label = format!("Revoke {}", k.prefix);
                        let state = if k.revoked_at.is_some() {
                            view! { <span class="badge blocked">"revoked"</span> }.into_any()
                        } else {
                            view! {
                                <ActionForm action=revoke>
                                    <input type="hidden" name="key_id" value=k.id.to_string()/>
                                    <button type="submit" class="danger" aria-label=revoke_label>"Revoke"</button>
                                </ActionForm>
                            }.into_any()
                        };
                        view! {
                            <tr data-prefix=k.prefix.clone()>
                                <td><code>{k.prefix.clone()}"…"</code></td>
                                <td>{k.label}</td>
                                <td>{when(Some(k.created_at))}</td>
                                <td>{when(k.last_used_at)}</td>
                                <td>{k.expires_at.map_or("never".to_string(), |t| when(Some(t)))}</td>
                                <td>{limits_text(k.limits)}</td>
                                <td>{state}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        }
        .into_any()
    };
    view! {
        <section class="card">
            <h2>"API keys"</h2>
            {form}
            {move || view! { <NewKey shown=kc.get()/> }}
            {move || view! { <NewKey shown=km.get()/> }}
            {action_result(revoke.value(), "")}
            {list}
        </section>
    }
}

#[component]
fn Managers(
    managers: Vec<String>,
    editable: bool,
    actions: Actions,
    client: Signal<Option<String>>,
) -> impl IntoView {
    let c = client.get_untracked().unwrap_or_default();
    let remove = actions.remove_manager;
    let items = if managers.is_empty() {
        view! { <p class="muted">"No managers yet."</p> }.into_any()
    } else {
        let c2 = c.clone();
        view! {
            <ul class="managers">
                {managers.into_iter().map(|m| {
                    let c = c2.clone();
                    view! {
                        <li>
                            {m.clone()}
                            {editable.then(|| view! {
                                <ActionForm action=remove attr:class="inline">
                                    <input type="hidden" name="client" value=c/>
                                    <input type="hidden" name="username" value=m.clone()/>
                                    <button type="submit" class="link danger" aria-label=format!("Remove manager {m}")>"remove"</button>
                                </ActionForm>
                            })}
                        </li>
                    }
                }).collect_view()}
            </ul>
        }
        .into_any()
    };
    let add = actions.add_manager;
    view! {
        <section class="card">
            <h2>"Managers"</h2>
            {items}
            {editable.then(|| view! {
                <ActionForm action=add attr:class="inline-form">
                    <input type="hidden" name="client" value=c.clone()/>
                    <label>"Username" <input name="username" required/></label>
                    <button type="submit">"Add manager"</button>
                </ActionForm>
            })}
            {action_result(add.value(), "")}
        </section>
    }
}
