use super::status::config_status;
use leptos::prelude::*;

#[component]
pub fn HomePage() -> impl IntoView {
    let status = Resource::new(|| (), |_| config_status());
    let (hydrated, set_hydrated) = signal(false);
    // Effects run only in the browser, so this marks the page as hydrated.
    Effect::new(move |_| set_hydrated.set(true));
    let refresh = move |_| status.refetch();

    view! {
        <section class="card" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Tollgate"</h1>
            <p class="lede">"A self-hosted gateway for your AI models: keys, budgets and access, enforced on every call."</p>
            <h2>"Configuration"</h2>
            <Suspense fallback=|| view! { <p>"Loading status…"</p> }>
                {move || Suspend::new(async move {
                    match status.await {
                        Ok(s) => view! {
                            <dl class="status">
                                <dt>"Generation"</dt>
                                <dd data-testid="config-generation">{s.generation}</dd>
                                <dt>"Last reload"</dt>
                                <dd data-testid="config-ok">{if s.last_reload_ok { "succeeded" } else { "failed; the previous config stays in force" }}</dd>
                                <dt>"Models"</dt>
                                <dd>{s.models.join(", ")}</dd>
                            </dl>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot load the status: {e}")}</p> }.into_any(),
                    }
                })}
            </Suspense>
            <button type="button" on:click=refresh>"Refresh status"</button>
        </section>
    }
}
