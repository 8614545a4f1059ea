//! What the web console shows, below the server functions: each function
//! takes already-authorised arguments and builds one page's data. What the
//! console changes is in `actions` and `accounts`.

use super::entities::{api_key, client, client_manager, ledger, user};
use super::session::SessionUser;
use super::{consents, keys, now_ms, pools, sync, AppContext};
use crate::domain::config::{Config, PoolLimit, SettingsSource};
use crate::domain::owner::OwnerKind;
use crate::domain::owner::Role;
use crate::domain::policy::{AccessPolicy, Verdict};
use crate::domain::pool::full_at;
use crate::domain::pricing::Breakdown;
use crate::domain::time::rfc3339;
use crate::domain::usage::Usage;
use crate::view::*;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const PAGE_SIZE: u64 = 50;

fn source_label(s: SettingsSource) -> String {
    match s {
        SettingsSource::Named => "named entry".into(),
        SettingsSource::Default => "defaults".into(),
    }
}

pub async fn pool_view<C: ConnectionTrait>(
    c: &C,
    ctx: &AppContext,
    kind: OwnerKind,
    id: i64,
    name: &str,
) -> Result<Option<PoolView>, DbErr> {
    let Some(p) = pools::find(c, kind, id).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let st = pools::current(c, &p, now).await?;
    let snapshot = ctx.config.load();
    let section = match kind {
        OwnerKind::Client => &snapshot.config.clients,
        OwnerKind::User => &snapshot.config.users,
    };
    Ok(Some(PoolView {
        balance: if st.limit.is_blocked() { 0 } else { st.balance },
        held: st.held + if st.limit.is_blocked() { st.balance } else { 0 },
        max: match st.limit {
            PoolLimit::Unlimited => None,
            PoolLimit::Limited(m) => Some(m),
        },
        refresh: st.refresh_micro,
        starting: section.settings_for(name).0.pool.starting_micro,
        full_at: full_at(&st, now),
    }))
}

/// Clients the viewer may see, a page at a time. `only` limits to these ids (managers).
pub async fn clients_page(
    ctx: &AppContext,
    only: Option<Vec<i64>>,
    page: u64,
    can_create: bool,
) -> Result<ClientsPage, DbErr> {
    let db = &ctx.db;
    let mut q = client::Entity::find().order_by_asc(client::Column::Name);
    if let Some(ids) = &only {
        q = q.filter(client::Column::Id.is_in(ids.clone()));
    }
    let paginator = q.paginate(db, PAGE_SIZE);
    let total = paginator.num_items().await?;
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages - 1);
    let clients = paginator.fetch_page(page).await?;
    let ids: Vec<i64> = clients.iter().map(|c| c.id).collect();

    let mut key_counts: HashMap<i64, u64> = HashMap::new();
    for k in api_key::Entity::find()
        .select_only()
        .column(api_key::Column::OwnerId)
        .filter(api_key::Column::OwnerKind.eq(OwnerKind::Client.as_str()))
        .filter(api_key::Column::OwnerId.is_in(ids.clone()))
        .filter(api_key::Column::RevokedAt.is_null())
        .into_tuple::<i64>()
        .all(db)
        .await?
    {
        *key_counts.entry(k).or_default() += 1;
    }
    let managers = managers_of(db, &ids).await?;
    let snapshot = ctx.config.load();
    let mut rows = Vec::with_capacity(clients.len());
    for c in clients {
        rows.push(ClientRow {
            pool: pool_view(db, ctx, OwnerKind::Client, c.id, &c.name).await?,
            key_count: key_counts.get(&c.id).copied().unwrap_or(0),
            managers: managers.get(&c.id).cloned().unwrap_or_default(),
            source: source_label(snapshot.config.clients.settings_for(&c.name).1),
            name: c.name,
        });
    }
    Ok(ClientsPage {
        rows,
        page,
        pages,
        total,
        can_create,
    })
}

async fn managers_of<C: ConnectionTrait>(
    c: &C,
    client_ids: &[i64],
) -> Result<HashMap<i64, Vec<String>>, DbErr> {
    let links = client_manager::Entity::find()
        .filter(client_manager::Column::ClientId.is_in(client_ids.to_vec()))
        .all(c)
        .await?;
    let user_ids: Vec<i64> = links.iter().map(|l| l.user_id).collect();
    let names: HashMap<i64, String> = user::Entity::find()
        .filter(user::Column::Id.is_in(user_ids))
        .all(c)
        .await?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    let mut out: HashMap<i64, Vec<String>> = HashMap::new();
    for l in links {
        if let Some(n) = names.get(&l.user_id) {
            out.entry(l.client_id).or_default().push(n.clone());
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

/// Client ids a user manages.
pub async fn managed_client_ids<C: ConnectionTrait>(
    c: &C,
    user_id: i64,
) -> Result<Vec<i64>, DbErr> {
    Ok(client_manager::Entity::find()
        .filter(client_manager::Column::UserId.eq(user_id))
        .all(c)
        .await?
        .into_iter()
        .map(|l| l.client_id)
        .collect())
}

/// Whether `u` may manage the client `client_id`: admins any, managers
/// those assigned to them.
pub async fn may_manage<C: ConnectionTrait>(
    c: &C,
    u: &SessionUser,
    client_id: i64,
) -> Result<bool, DbErr> {
    Ok(match u.role {
        Role::Admin => true,
        Role::Manager => managed_client_ids(c, u.id).await?.contains(&client_id),
        Role::User => false,
    })
}

/// The clients list as `u` may see it: admins every client, managers theirs.
pub async fn clients_for(
    ctx: &AppContext,
    u: &SessionUser,
    page: u64,
) -> Result<ClientsPage, DbErr> {
    let only = match u.role {
        Role::Admin => None,
        Role::Manager => Some(managed_client_ids(&ctx.db, u.id).await?),
        Role::User => Some(Vec::new()),
    };
    clients_page(ctx, only, page, u.role == Role::Admin).await
}

pub async fn owner_detail(
    ctx: &AppContext,
    kind: OwnerKind,
    id: i64,
    name: &str,
    can_edit_managers: bool,
) -> Result<OwnerDetail, DbErr> {
    let db = &ctx.db;
    let snapshot = ctx.config.load();
    let section = match kind {
        OwnerKind::Client => &snapshot.config.clients,
        OwnerKind::User => &snapshot.config.users,
    };
    let (settings, source) = section.settings_for(name);
    let consented = consents::consented_models(db, kind, id).await?;
    let models = model_access(&snapshot.config, &settings.access, &consented);
    let keys = key_rows(db, kind, id).await?;
    let managers = match kind {
        OwnerKind::Client => managers_of(db, &[id])
            .await?
            .remove(&id)
            .unwrap_or_default(),
        OwnerKind::User => Vec::new(),
    };
    let (recent, usage) = match pools::find(db, kind, id).await? {
        Some(p) => usage(db, p.id).await?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(OwnerDetail {
        kind,
        name: name.into(),
        source: source_label(source),
        pool: pool_view(db, ctx, kind, id, name).await?,
        models,
        keys,
        managers,
        can_edit_managers,
        recent,
        usage,
    })
}

/// How the owner's access policy decides each catalog model.
fn model_access(
    config: &Config,
    access: &AccessPolicy,
    consented: &BTreeSet<String>,
) -> Vec<ModelAccessRow> {
    config
        .models
        .values()
        .map(|m| {
            let d = access.decide(&m.name, consented.contains(&m.name));
            let undecided = access.decide(&m.name, false);
            ModelAccessRow {
                model: m.name.clone(),
                verdict: match d.verdict {
                    Verdict::Allowed => "allowed",
                    Verdict::Denied => "denied",
                    Verdict::ConsentRequired => "consent needed",
                }
                .into(),
                rule: d.rule.to_string(),
                consent_applies: undecided.verdict == Verdict::ConsentRequired,
                consented: consented.contains(&m.name),
                consent_notice: m.consent_notice.clone(),
            }
        })
        .collect()
}

async fn key_rows<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    id: i64,
) -> Result<Vec<KeyRow>, DbErr> {
    Ok(keys::list(c, Some((kind, id)))
        .await?
        .into_iter()
        .map(|k| KeyRow {
            limits: keys::key_limits(&k),
            id: k.id,
            prefix: k.prefix,
            label: k.label,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        })
        .collect())
}

async fn usage<C: ConnectionTrait>(
    c: &C,
    pool_id: i64,
) -> Result<(Vec<LedgerRow>, Vec<DayUsage>), DbErr> {
    let since = now_ms() - 30 * 86_400_000;
    let rows = ledger::Entity::find()
        .filter(ledger::Column::PoolId.eq(pool_id))
        .filter(ledger::Column::CreatedAt.gte(since))
        .order_by_desc(ledger::Column::Id)
        .limit(5000)
        .all(c)
        .await?;
    let mut days: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in &rows {
        if r.coins_micro > 0 {
            *days
                .entry(rfc3339(r.created_at)[..10].to_string())
                .or_default()
                .entry(r.model.clone())
                .or_default() += r.coins_micro;
        }
    }
    let usage = days
        .into_iter()
        .map(|(day, m)| DayUsage {
            day,
            by_model: m.into_iter().collect(),
        })
        .collect();
    let recent = rows.into_iter().take(20).map(ledger_row).collect();
    Ok((recent, usage))
}

/// A stored count as tokens; a negative one (never written) as none.
fn tokens(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A ledger row as the page shows it. `tokens_in` holds every input token;
/// what is neither a cache read nor a cache write was read at the input price.
pub(crate) fn ledger_row(r: ledger::Model) -> LedgerRow {
    let (cached, written) = (tokens(r.cached_in), tokens(r.cache_write_in));
    LedgerRow {
        at: r.created_at,
        model: r.model,
        usage: Usage {
            input: tokens(r.tokens_in)
                .saturating_sub(cached)
                .saturating_sub(written),
            cached_input: cached,
            cache_write: written,
            output: tokens(r.tokens_out),
            reasoning: tokens(r.reasoning_out),
        },
        lines: Breakdown {
            input: r.input_micro,
            cached_input: r.cached_input_micro,
            cache_write: r.cache_write_micro,
            output: r.output_micro,
            request: r.request_micro,
        },
        cost: r.cost_micro,
        overage: r.overage_micro,
        coins: r.coins_micro,
        code: r.code,
        outcome: r.outcome,
    }
}

pub async fn config_overview(ctx: &AppContext) -> Result<ConfigReport, DbErr> {
    let snapshot = ctx.config.load();
    let state = super::config_state::get(&ctx.db).await?;
    let clients: Vec<String> = super::owners::all_clients(&ctx.db)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let users: Vec<String> = super::owners::all_users(&ctx.db)
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    let mut unmatched = sync::unmatched(
        OwnerKind::Client,
        &snapshot.config.clients,
        clients.iter().map(String::as_str),
    );
    unmatched.extend(sync::unmatched(
        OwnerKind::User,
        &snapshot.config.users,
        users.iter().map(String::as_str),
    ));
    // Reload status from the same place `/healthz` reads it: this instance's.
    let reload = ctx.reload.load();
    Ok(ConfigReport {
        generation: reload.generation,
        applied_at: reload.applied_at,
        last_reload_ok: reload.last_reload_ok,
        last_error: reload.last_error.clone(),
        last_plan: state.and_then(|s| s.last_plan),
        unmatched,
        warnings: snapshot.warnings.iter().map(|w| w.to_string()).collect(),
        path: ctx.config_path.display().to_string(),
    })
}

/// Every user, for the Users page.
pub async fn users(ctx: &AppContext) -> Result<Vec<UserRow>, DbErr> {
    Ok(super::owners::all_users(&ctx.db)
        .await?
        .into_iter()
        .map(|u| UserRow {
            username: u.username,
            // Roles are written only from `Role`; an unknown one shows least privilege.
            role: Role::parse(&u.role).unwrap_or(Role::User),
            active: u.active,
        })
        .collect())
}

/// The config status on the start page: what `/healthz` reports, without the error text.
pub async fn config_summary(ctx: &AppContext) -> Result<ConfigSummary, DbErr> {
    let reload = ctx.reload.load();
    let snapshot = ctx.config.load();
    Ok(ConfigSummary {
        generation: reload.generation,
        applied_at: reload.applied_at,
        last_reload_ok: reload.last_reload_ok,
        models: snapshot.config.models.keys().cloned().collect(),
    })
}

/// Every catalog deployment with this instance's view of its health.
pub fn deployment_rows(ctx: &AppContext) -> Vec<crate::view::DeploymentRow> {
    use crate::domain::config::Provider;
    let snapshot = ctx.config.load_full();
    let models = &snapshot.config.models;
    let health = ctx.balancer.health(models.values());
    health
        .into_iter()
        .filter_map(|h| {
            let spec = models.get(&h.model)?;
            let d = spec.deployments.iter().find(|d| d.name == h.deployment)?;
            let upstream = match &d.provider {
                Provider::Dummy => "dummy (built in)".to_string(),
                Provider::OpenAi { base_url, .. } => format!("openai {base_url}"),
                Provider::Anthropic { base_url, .. } => format!("anthropic {base_url}"),
            };
            Some(crate::view::DeploymentRow {
                upstream,
                weight: d.weight,
                max_in_flight: d.max_in_flight,
                breaker: h.breaker.to_string(),
                open_for_ms: h.open_for_ms,
                in_flight: h.in_flight,
                served: h.served,
                failed: h.failed,
                last_error: h.last_error,
                last_error_at: h.last_error_at,
                fallbacks: spec.fallbacks.clone(),
                model: h.model,
                deployment: h.deployment,
            })
        })
        .collect()
}
