//! The web UI: the HTML shell, the router and the pages.

mod alerts;
pub mod api;
mod audit;
mod home;
mod owner;
mod pages;
pub mod status;
mod usage;
mod widgets;

use crate::domain::owner::Role;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{path, SsrMode, StaticSegment};

/// The HTML document rendered on the server around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <link rel="stylesheet" id="leptos" href="/pkg/tollgate.css"/>
                <title>"Tollgate"</title>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Router>
            <Nav/>
            <main class="page">
                <Routes fallback=NotFound>
                    <Route path=StaticSegment("") view=home::HomePage/>
                    <Route path=path!("/login") view=pages::LoginPage/>
                    <Route path=path!("/setup") view=pages::SetupPage/>
                    // Pages that may refuse the visitor render in full before
                    // the response starts, so the status their data sets (401,
                    // 403, 404) is the one sent, every time. Streamed, the
                    // headers could leave before the data had decided.
                    <Route path=path!("/clients") view=pages::ClientsPage ssr=SsrMode::Async/>
                    <Route path=path!("/clients/:name") view=owner::ClientPage ssr=SsrMode::Async/>
                    <Route path=path!("/me") view=owner::MePage ssr=SsrMode::Async/>
                    <Route path=path!("/users") view=pages::UsersPage ssr=SsrMode::Async/>
                    <Route path=path!("/config") view=pages::ConfigPage ssr=SsrMode::Async/>
                    <Route path=path!("/deployments") view=pages::DeploymentsPage ssr=SsrMode::Async/>
                    <Route path=path!("/audit") view=audit::AuditTrailPage ssr=SsrMode::Async/>
                    <Route path=path!("/usage") view=usage::UsagePage ssr=SsrMode::Async/>
                    <Route path=path!("/usage/calls") view=usage::UsageCallsPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

#[component]
fn Nav() -> impl IntoView {
    let logout = ServerAction::<api::Logout>::new();
    let location = leptos_router::hooks::use_location();
    // Signing in or out navigates, so the navigation itself refreshes who is signed in.
    let me = Resource::new(
        move || (logout.version().get(), location.pathname.get()),
        |_| api::current_user(),
    );
    let (hydrated, set_hydrated) = signal(false);
    // Effects run only in the browser: this marks when the page is interactive.
    Effect::new(move |_| set_hydrated.set(true));
    view! {
        <header class="topbar" data-hydrated=move || hydrated.get().to_string()>
            <A href="/" attr:class="brand">"Tollgate"</A>
            <nav aria-label="Main">
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match me.await {
                            Ok(Some(u)) => {
                                let admin = u.role == Role::Admin;
                                let manager = u.role.manages_clients();
                                view! {
                                    {manager.then(|| view! { <A href="/clients">"Clients"</A><A href="/usage">"Usage"</A> })}
                                    <A href="/me">"Me"</A>
                                    {admin.then(|| view! { <A href="/users">"Users"</A><A href="/deployments">"Deployments"</A><A href="/config">"Config"</A><A href="/audit">"Audit"</A> })}
                                    <span class="who" data-testid="signed-in-as">{format!("{} ({})", u.username, u.role.as_str())}</span>
                                    <ActionForm action=logout attr:class="inline">
                                        <button type="submit" class="link">"Sign out"</button>
                                    </ActionForm>
                                }.into_any()
                            }
                            _ => view! { <A href="/login">"Sign in"</A> }.into_any(),
                        }
                    })}
                </Suspense>
            </nav>
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <section class="card">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. "<a href="/">"Go to the start page"</a>"."</p>
        </section>
    }
}
