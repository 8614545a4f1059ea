//! Sign-in, setup, the clients list, users and config pages.

use super::api::*;
use super::widgets::*;
use crate::domain::money::format_coins;
use crate::domain::oidc::{Refusal, START_PATH};
use crate::domain::time::short;
use crate::view::*;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let options = Resource::new(|| (), |_| login_options());
    let query = use_query_map();
    // Only known reason codes are shown, as our own text: nothing from the
    // address reaches the page.
    let sso_error = move || {
        let code = query.read().get("sso_error")?;
        Refusal::from_code(&code)
    };
    view! {
        <section class="card narrow">
            <h1>"Sign in"</h1>
            {move || sso_error().map(|r| view! {
                <p class="error" role="alert" data-testid="sso-error" data-reason=r.code()>
                    {r.message()}" ("{r.code()}")"
                </p>
            })}
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let o = options.await.unwrap_or(SignInOptions { local: true, sso_label: None });
                    view! {
                        {o.sso_label.map(|label| view! {
                            // A full navigation: the server answers with a redirect to the provider.
                            <p><a class="sso" href=START_PATH rel="external" data-testid="sso-button">{label}</a></p>
                        })}
                        {o.local.then(|| view! {
                            <ActionForm action=login>
                                <label>"Username" <input name="username" autocomplete="username" required/></label>
                                <label>"Password" <input name="password" type="password" autocomplete="current-password" required/></label>
                                <button type="submit">"Sign in"</button>
                            </ActionForm>
                        })}
                        {(!o.local).then(|| view! { <p class="muted">"Password sign-in is turned off on this server."</p> })}
                    }
                })}
            </Suspense>
            {action_result(login.value(), "")}
        </section>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let query = use_query_map();
    let token = move || query.read().get("token").unwrap_or_default();
    let setup = ServerAction::<SetupAdmin>::new();
    let needed = Resource::new(|| (), |_| setup_needed());
    view! {
        <section class="card narrow">
            <h1>"Create the first admin"</h1>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match needed.await {
                        Ok(true) => view! {
                            <p>"Use the setup address from the server log. The token works once."</p>
                            <ActionForm action=setup>
                                <input type="hidden" name="token" value=token()/>
                                <label>"Username" <input name="username" autocomplete="username" required/></label>
                                <label>"Password (at least 10 characters)" <input name="password" type="password" autocomplete="new-password" required minlength="10"/></label>
                                <button type="submit">"Create admin"</button>
                            </ActionForm>
                        }.into_any(),
                        Ok(false) => view! { <p>"Setup is done. "<A href="/login">"Sign in"</A>"."</p> }.into_any(),
                        Err(e) => view! { <ErrorNote message=server_error_text(&e)/> }.into_any(),
                    }
                })}
            </Suspense>
            {action_result(setup.value(), "")}
        </section>
    }
}

#[component]
pub fn ClientsPage() -> impl IntoView {
    let query = use_query_map();
    let page = move || {
        query
            .read()
            .get("page")
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let create = ServerAction::<CreateClient>::new();
    let list = Resource::new(
        move || (page(), create.version().get()),
        |(p, _)| list_clients(p),
    );
    view! {
        <h1>"Clients"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match list.await {
                    Err(e) => view! { <section class="card"><ErrorNote message=server_error_text(&e)/><p><A href="/login">"Sign in"</A></p></section> }.into_any(),
                    Ok(p) => view! { <ClientsTable p create/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ClientsTable(p: ClientsPage, create: ServerAction<CreateClient>) -> impl IntoView {
    let form = p.can_create.then(|| view! {
        <section class="card">
            <h2>"New client"</h2>
            <ActionForm action=create attr:class="inline-form">
                <label>"Name" <input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._\\-]*" maxlength="64" placeholder="e.g. research-bot"/></label>
                <button type="submit">"Create client"</button>
            </ActionForm>
            <p class="muted">"Letters, digits, '.', '_' and '-'. A named entry under clients: in the config applies at once; otherwise the defaults do."</p>
            {action_result(create.value(), "")}
        </section>
    });
    let body = if p.rows.is_empty() {
        view! { <p class="empty">{if p.can_create { "No clients yet. Create the first one above." } else { "You do not manage any client yet. An admin can assign you." }}</p> }.into_any()
    } else {
        view! {
            <table class="clients">
                <thead><tr><th>"Name"</th><th>"Balance"</th><th>"Refresh / h"</th><th>"Keys"</th><th>"Managers"</th><th>"Settings"</th></tr></thead>
                <tbody>
                    {p.rows.into_iter().map(|r| { let href = format!("/clients/{}", r.name); let label = r.name.clone(); view! {
                        <tr data-client=r.name.clone()>
                            <td><A href=href>{label.clone()}</A></td>
                            <td><Gauge pool=r.pool.clone()/></td>
                            <td>{r.pool.as_ref().map_or("—".into(), |p| format_coins(p.refresh))}</td>
                            <td>{r.key_count}</td>
                            <td>{if r.managers.is_empty() { "—".to_string() } else { r.managers.join(", ") }}</td>
                            <td>{r.source}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
        }
        .into_any()
    };
    let pager = (p.pages > 1).then(|| view! {
        <nav class="pager" aria-label="Pages">
            {(p.page > 0).then(|| view! { <A href=format!("/clients?page={}", p.page - 1)>"← Previous"</A> })}
            <span>{format!("Page {} of {} ({} clients)", p.page + 1, p.pages, p.total)}</span>
            {(p.page + 1 < p.pages).then(|| view! { <A href=format!("/clients?page={}", p.page + 1)>"Next →"</A> })}
        </nav>
    });
    view! { {form}<section class="card">{body}{pager}</section> }
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUserAccount>::new();
    let role = ServerAction::<SetUserRole>::new();
    let active = ServerAction::<SetUserActive>::new();
    let reset = ServerAction::<ResetPassword>::new();
    let users = Resource::new(
        move || {
            (
                create.version().get(),
                role.version().get(),
                active.version().get(),
            )
        },
        |_| list_users(),
    );
    view! {
        <h1>"Users"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
                    Err(e) => view! { <section class="card"><ErrorNote message=server_error_text(&e)/></section> }.into_any(),
                    Ok(list) => view! {
                        <NewUser create/>
                        <section class="card">
                            {action_result(role.value(), "")}
                            {action_result(active.value(), "")}
                            {action_result(reset.value(), "Password reset; their sessions have ended.")}
                            <table>
                                <thead><tr><th>"User"</th><th>"Role"</th><th>"Status"</th><th>"Password"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| view! { <UserLine u role active reset/> }).collect_view()}
                                </tbody>
                            </table>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn NewUser(create: ServerAction<CreateUserAccount>) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"New user"</h2>
            <ActionForm action=create attr:class="inline-form">
                <label>"Username" <input name="username" required/></label>
                <label>"Role" <select name="role">{Role::ALL.into_iter().map(|r| view! { <option value=r.as_str()>{r.as_str()}</option> }).collect_view()}</select></label>
                <label>"Initial password" <input name="password" type="password" required minlength="10" autocomplete="new-password"/></label>
                <button type="submit">"Create user"</button>
            </ActionForm>
            {action_result(create.value(), "User created.")}
        </section>
    }
}

/// One user's row on the Users page, with its forms.
#[component]
fn UserLine(
    u: UserRow,
    role: ServerAction<SetUserRole>,
    active: ServerAction<SetUserActive>,
    reset: ServerAction<ResetPassword>,
) -> impl IntoView {
    let role_label = format!("Role of {}", u.username);
    let pw_label = format!("New password for {}", u.username);
    let (n1, n2, n3) = (u.username.clone(), u.username.clone(), u.username.clone());
    view! {
        <tr data-user=u.username.clone()>
            <td>{u.username.clone()}</td>
            <td>
                <ActionForm action=role attr:class="inline">
                    <input type="hidden" name="username" value=n1/>
                    <select name="role" aria-label=role_label>
                        {Role::ALL.into_iter().map(|r| view! { <option value=r.as_str() selected=u.role == r>{r.as_str()}</option> }).collect_view()}
                    </select>
                    <button type="submit">"Set role"</button>
                </ActionForm>
            </td>
            <td>
                <ActionForm action=active attr:class="inline">
                    <input type="hidden" name="username" value=n2/>
                    <input type="hidden" name="active" value=(!u.active).to_string()/>
                    <span>{if u.active { "active " } else { "deactivated " }}</span>
                    <button type="submit" class=if u.active { "danger" } else { "" }>{if u.active { "Deactivate" } else { "Reactivate" }}</button>
                </ActionForm>
            </td>
            <td>
                <ActionForm action=reset attr:class="inline">
                    <input type="hidden" name="username" value=n3/>
                    <input name="password" type="password" minlength="10" required aria-label=pw_label autocomplete="new-password"/>
                    <button type="submit">"Reset"</button>
                </ActionForm>
            </td>
        </tr>
    }
}

#[component]
pub fn ConfigPage() -> impl IntoView {
    let overview = Resource::new(|| (), |_| config_overview());
    view! {
        <h1>"Configuration"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Err(e) => view! { <section class="card"><ErrorNote message=server_error_text(&e)/></section> }.into_any(),
                    Ok(o) => view! {
                        <section class="card">
                            <dl class="facts">
                                <dt>"File"</dt><dd><code>{o.path.clone()}</code></dd>
                                <dt>"Generation"</dt><dd data-testid="generation">{o.generation}</dd>
                                <dt>"Applied"</dt><dd>{short(o.applied_at)}</dd>
                                <dt>"Last reload"</dt>
                                <dd data-testid="reload-status">{if o.last_reload_ok { "succeeded".to_string() } else { "failed; the previous config stays in force".to_string() }}</dd>
                            </dl>
                            {o.last_error.clone().map(|e| view! { <pre class="error" role="alert" data-testid="config-error">{e}</pre> })}
                        </section>
                        <super::alerts::AlertsCard/>
                        <section class="card">
                            <h2>"What the last reload changed"</h2>
                            <p class="muted">"The same plan "<code>"tollgate check-config --plan"</code>" prints: "<code>"~"</code>" marks a change."</p>
                            <pre data-testid="last-plan">{o.last_plan.clone().unwrap_or_else(|| "No reload has been recorded yet.".to_string())}</pre>
                        </section>
                        <section class="card">
                            <h2>"Entries that match nobody yet"</h2>
                            {if o.unmatched.is_empty() {
                                view! { <p class="muted">"Every named entry matches an existing client or user."</p> }.into_any()
                            } else {
                                view! {
                                    <p>"These named entries do nothing until a client or user with that name is created:"</p>
                                    <ul data-testid="unmatched">{o.unmatched.into_iter().map(|u| view! { <li><code>{u}</code></li> }).collect_view()}</ul>
                                }.into_any()
                            }}
                        </section>
                        {(!o.warnings.is_empty()).then(|| view! {
                            <section class="card"><h2>"Warnings"</h2><ul>{o.warnings.into_iter().map(|w| view! { <li>{w}</li> }).collect_view()}</ul></section>
                        })}
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Admins: each deployment's breaker, calls in flight and last error, as
/// the instance that renders the page sees them.
#[component]
pub fn DeploymentsPage() -> impl IntoView {
    let rows = Resource::new(|| (), |_| deployment_health());
    view! {
        <h1>"Deployments"</h1>
        <p class="muted">"Health is passive and per instance: what this instance's calls saw. An open breaker lets one probe call through after its cool-down."</p>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match rows.await {
                    Err(e) => view! { <section class="card"><ErrorNote message=server_error_text(&e)/></section> }.into_any(),
                    Ok(rows) => view! {
                        <section class="card">
                            <table data-testid="deployments">
                                <thead><tr><th>"Model"</th><th>"Deployment"</th><th>"Upstream"</th><th>"Weight"</th><th>"Breaker"</th><th>"In flight"</th><th>"Served"</th><th>"Failed"</th><th>"Last error"</th></tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|r| {
                                        let breaker = if r.breaker == "open" { format!("open ({} s left)", (r.open_for_ms + 999) / 1000) } else { r.breaker.clone() };
                                        let limit = r.max_in_flight.map(|m| format!(" / {m}")).unwrap_or_default();
                                        view! {
                                            <tr data-testid="deployment-row">
                                                <td>{r.model.clone()}</td>
                                                <td>{r.deployment.clone()}</td>
                                                <td><code>{r.upstream.clone()}</code></td>
                                                <td>{r.weight}</td>
                                                <td data-testid="breaker" class=format!("breaker-{}", r.breaker)>{breaker}</td>
                                                <td>{format!("{}{limit}", r.in_flight)}</td>
                                                <td>{r.served}</td>
                                                <td>{r.failed}</td>
                                                <td>{r.last_error.clone().map(|e| format!("{} — {e}", r.last_error_at.map(short).unwrap_or_default())).unwrap_or_default()}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
