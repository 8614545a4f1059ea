//! The usage explorer's storage side: who may see what (`Scope`, enforced
//! in every statement), the page data from the daily roll-up, and the calls
//! behind it from the ledger, a keyset page (or CSV batch) at a time.

use super::actions::ConsoleError;
use super::console::ledger_row;
use super::entities::ledger;
use super::owners::{client_by_name, user_by_name};
use super::rollup::placeholders;
use super::session::SessionUser;
use super::{console, pools};
use crate::domain::names::MAX_NAME_LEN;
use crate::domain::owner::{OwnerKind, Role};
use crate::domain::spend::{top_groups, Cursor, DayRange, Grouping, CHART_GROUPS, TOP_SPENDERS};
use crate::domain::time::day_label;
use crate::view::{CallRow, Spend, SpendGroup, SpendReport, SpendSeries};
use http::StatusCode;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, QueryResult, Statement, TryGetable, Value};
use std::collections::{BTreeMap, HashMap};

/// Whose usage a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Admins: every client and user.
    All,
    /// Managers: the clients this user manages, nothing else.
    ManagerOf(i64),
}

impl Scope {
    /// Plain users see only their own page (`/me`), not the explorer.
    pub fn of(u: &SessionUser) -> Result<Scope, ConsoleError> {
        match u.role {
            Role::Admin => Ok(Scope::All),
            Role::Manager => Ok(Scope::ManagerOf(u.id)),
            Role::User => Err(ConsoleError::refused(
                StatusCode::FORBIDDEN,
                "Only admins and managers may see usage.",
            )),
        }
    }

    /// The condition on an owner's kind and id columns, and its values.
    fn condition(self, kind: &str, id: &str) -> (String, Vec<Value>) {
        match self {
            Scope::All => (String::new(), Vec::new()),
            Scope::ManagerOf(user) => (
                format!(
                    " AND {kind} = 'client' AND {id} IN \
                     (SELECT client_id FROM client_managers WHERE user_id = ?)"
                ),
                vec![user.into()],
            ),
        }
    }
}

/// A statement with `?` placeholders, for the connection's backend.
fn statement<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> Statement {
    let backend = c.get_database_backend();
    Statement::from_sql_and_values(backend, placeholders(backend, sql), values)
}

fn col<T: TryGetable>(r: &QueryResult, i: usize) -> Result<T, DbErr> {
    r.try_get_by_index(i)
}

/// The condition that limits roll-up rows to a grouping's owners.
fn kind_filter(group: Grouping, column: &str) -> String {
    match group {
        Grouping::Client => format!(" AND {column} = 'client'"),
        Grouping::User => format!(" AND {column} = 'user'"),
        Grouping::Model => String::new(),
    }
}

fn refused_input(message: String) -> ConsoleError {
    ConsoleError::bad_request(message)
}

/// Parses what the page or a CSV link asked for.
pub fn parse_query(
    from: &str,
    to: &str,
    group: &str,
    today: i64,
) -> Result<(DayRange, Grouping), ConsoleError> {
    let range = DayRange::parse(from, to, today).map_err(refused_input)?;
    let group = Grouping::parse(group)
        .ok_or_else(|| refused_input("Group by client, user or model.".into()))?;
    Ok((range, group))
}

/// One (day, group) cell of the roll-up; `key` is the owner id or the model.
struct Cell {
    day: i64,
    key: String,
    spend: Spend,
}

fn spend_at(r: &QueryResult, first: usize) -> Result<Spend, DbErr> {
    Ok(Spend {
        calls: col(r, first)?,
        refused: col(r, first + 1)?,
        tokens_in: col(r, first + 2)?,
        tokens_out: col(r, first + 3)?,
        coins: col(r, first + 4)?,
    })
}

const SUMS: &str = "CAST(SUM(d.calls) AS BIGINT), CAST(SUM(d.refused) AS BIGINT), \
     CAST(SUM(d.tokens_in) AS BIGINT), CAST(SUM(d.tokens_out) AS BIGINT), \
     CAST(SUM(d.coins_micro) AS BIGINT)";

/// Spend per day and group over the range, from the roll-up alone.
async fn cells<C: ConnectionTrait>(
    c: &C,
    scope: Scope,
    range: DayRange,
    group: Grouping,
) -> Result<Vec<Cell>, DbErr> {
    let key = match group {
        Grouping::Model => "d.model",
        _ => "d.owner_id",
    };
    let (cond, extra) = scope.condition("d.owner_kind", "d.owner_id");
    let sql = format!(
        "SELECT d.day, {key}, {SUMS} FROM usage_daily d WHERE d.day >= ? AND d.day <= ?{}{cond} \
         GROUP BY d.day, {key}",
        kind_filter(group, "d.owner_kind")
    );
    let mut values: Vec<Value> = vec![range.from.into(), range.to.into()];
    values.extend(extra);
    let rows = c.query_all(statement(c, &sql, values)).await?;
    rows.iter()
        .map(|r| {
            let key = match group {
                Grouping::Model => col::<String>(r, 1)?,
                _ => col::<i64>(r, 1)?.to_string(),
            };
            Ok(Cell {
                day: col(r, 0)?,
                key,
                spend: spend_at(r, 2)?,
            })
        })
        .collect()
}

fn add(a: &mut Spend, b: &Spend) {
    a.calls += b.calls;
    a.refused += b.refused;
    a.tokens_in = a.tokens_in.saturating_add(b.tokens_in);
    a.tokens_out = a.tokens_out.saturating_add(b.tokens_out);
    a.coins += b.coins;
}

/// Owner names by id, for the few groups the page names.
async fn names<C: ConnectionTrait>(
    c: &C,
    group: Grouping,
    keys: &[String],
) -> Result<HashMap<String, String>, DbErr> {
    let table = match group {
        Grouping::Client => "SELECT id, name FROM clients WHERE id IN",
        Grouping::User => "SELECT id, username FROM users WHERE id IN",
        Grouping::Model => {
            return Ok(keys.iter().map(|k| (k.clone(), model_label(k))).collect());
        }
    };
    let ids: Vec<i64> = keys.iter().filter_map(|k| k.parse().ok()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; ids.len()].join(", ");
    let values = ids.into_iter().map(Value::from).collect();
    let rows = c
        .query_all(statement(c, &format!("{table} ({marks})"), values))
        .await?;
    rows.iter()
        .map(|r| Ok((col::<i64>(r, 0)?.to_string(), col::<String>(r, 1)?)))
        .collect()
}

/// Orphaned-lease charges have no model.
fn model_label(model: &str) -> String {
    if model.is_empty() {
        "(leases charged in full)".into()
    } else {
        model.to_string()
    }
}

/// The explorer's page data: spend per day stacked by the top groups, and
/// the top spenders, for the groups in the caller's scope.
pub async fn report<C: ConnectionTrait>(
    c: &C,
    scope: Scope,
    range: DayRange,
    group: Grouping,
) -> Result<SpendReport, DbErr> {
    let cells = cells(c, scope, range, group).await?;
    let mut totals: BTreeMap<String, Spend> = BTreeMap::new();
    let mut total = Spend::default();
    for cell in &cells {
        add(totals.entry(cell.key.clone()).or_default(), &cell.spend);
        add(&mut total, &cell.spend);
    }
    let coins: Vec<(String, i64)> = totals.iter().map(|(k, s)| (k.clone(), s.coins)).collect();
    let top = top_groups(&coins, TOP_SPENDERS);
    let names = names(c, group, &top).await?;
    let named = |key: &String| {
        let name = names.get(key).cloned();
        SpendGroup {
            label: name.clone().unwrap_or_else(|| format!("#{key}")),
            name: if group == Grouping::Model {
                Some(key.clone())
            } else {
                name
            },
            spend: totals.get(key).cloned().unwrap_or_default(),
        }
    };
    let series = stack(&cells, range, &top, &named);
    Ok(SpendReport {
        from: day_label(range.from),
        to: day_label(range.to),
        group,
        days: (range.from..=range.to).map(day_label).collect(),
        series,
        top: top.iter().map(&named).collect(),
        groups: totals.len() as u64,
        total,
    })
}

/// The chart's series: each of the top groups, then "other" with the rest.
fn stack(
    cells: &[Cell],
    range: DayRange,
    top: &[String],
    named: &impl Fn(&String) -> SpendGroup,
) -> Vec<SpendSeries> {
    let drawn: Vec<&String> = top.iter().take(CHART_GROUPS).collect();
    let days = usize::try_from(range.days()).unwrap_or(0);
    let mut per_day = vec![vec![0i64; days]; drawn.len() + 1];
    let mut other = Spend::default();
    for cell in cells {
        let Ok(i) = usize::try_from(cell.day - range.from) else {
            continue;
        };
        let slot = drawn.iter().position(|k| **k == cell.key);
        if slot.is_none() {
            add(&mut other, &cell.spend);
        }
        if let Some(v) = per_day[slot.unwrap_or(drawn.len())].get_mut(i) {
            *v += cell.spend.coins;
        }
    }
    let mut series: Vec<SpendSeries> = drawn
        .iter()
        .zip(per_day.iter())
        .map(|(k, d)| SpendSeries {
            group: named(k),
            per_day: d.clone(),
        })
        .collect();
    if other.coins > 0 {
        series.push(SpendSeries {
            group: SpendGroup {
                label: "other".into(),
                name: None,
                spend: other,
            },
            per_day: per_day.pop().unwrap_or_default(),
        });
    }
    series
}

/// Which calls a drill-down or calls export lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calls {
    /// Every call of the grouping's owners in scope.
    All(Grouping),
    /// One owner's pool.
    Pool(i64),
    /// One model, over the owners in scope.
    Model(String),
    /// An owner without a pool: no calls.
    None,
}

fn not_found(group: Grouping) -> ConsoleError {
    ConsoleError::refused(
        StatusCode::NOT_FOUND,
        format!("No such {}, or you may not see it.", group.as_str()),
    )
}

/// What `name` in `group` lists, if the caller may see it; anything out of
/// scope looks exactly like a missing name (404).
pub async fn calls_target<C: ConnectionTrait>(
    c: &C,
    u: &SessionUser,
    scope: Scope,
    group: Grouping,
    name: Option<&str>,
) -> Result<Calls, ConsoleError> {
    let Some(name) = name else {
        return Ok(Calls::All(group));
    };
    if name.len() > MAX_NAME_LEN.max(256) {
        return Err(not_found(group));
    }
    let owner = match group {
        Grouping::Model => return Ok(Calls::Model(name.to_string())),
        Grouping::Client => match client_by_name(c, name).await? {
            Some(cl) if console::may_manage(c, u, cl.id).await? => (OwnerKind::Client, cl.id),
            _ => return Err(not_found(group)),
        },
        Grouping::User => match user_by_name(c, name).await? {
            Some(us) if scope == Scope::All => (OwnerKind::User, us.id),
            _ => return Err(not_found(group)),
        },
    };
    Ok(match pools::find(c, owner.0, owner.1).await? {
        Some(p) => Calls::Pool(p.id),
        None => Calls::None,
    })
}

/// Up to `limit` calls in the range, newest first, older than `before`.
pub async fn calls<C: ConnectionTrait>(
    c: &C,
    scope: Scope,
    which: &Calls,
    range: DayRange,
    before: Option<Cursor>,
    limit: u64,
) -> Result<Vec<Call>, DbErr> {
    let mut sql = String::from(
        "SELECT l.*, p.owner_kind AS owner_kind, COALESCE(cl.name, us.username, '') AS owner_name \
         FROM ledger l JOIN pools p ON p.id = l.pool_id \
         LEFT JOIN clients cl ON p.owner_kind = 'client' AND cl.id = p.owner_id \
         LEFT JOIN users us ON p.owner_kind = 'user' AND us.id = p.owner_id \
         WHERE l.created_at >= ? AND l.created_at < ?",
    );
    let mut values: Vec<Value> = vec![range.start_ms().into(), range.end_ms().into()];
    match which {
        Calls::None => return Ok(Vec::new()),
        Calls::All(group) => sql.push_str(&kind_filter(*group, "p.owner_kind")),
        Calls::Pool(id) => {
            sql.push_str(" AND l.pool_id = ?");
            values.push((*id).into());
        }
        Calls::Model(m) => {
            sql.push_str(" AND l.model = ?");
            values.push(m.clone().into());
        }
    }
    let (cond, extra) = scope.condition("p.owner_kind", "p.owner_id");
    sql.push_str(&cond);
    values.extend(extra);
    if let Some(b) = before {
        sql.push_str(" AND l.created_at <= ? AND (l.created_at < ? OR l.id < ?)");
        values.extend([b.created_at.into(), b.created_at.into(), b.id.into()]);
    }
    sql.push_str(" ORDER BY l.created_at DESC, l.id DESC LIMIT ?");
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let rows = c.query_all(statement(c, &sql, values)).await?;
    rows.iter().map(call_row).collect()
}

/// A ledger row with its owner.
#[derive(Debug, Clone)]
pub struct Call {
    pub ledger: ledger::Model,
    /// `client` or `user`.
    pub owner_kind: String,
    pub owner_name: String,
}

impl Call {
    /// Where a page that ends with this call continues.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.ledger.created_at,
            id: self.ledger.id,
        }
    }
}

fn call_row(r: &QueryResult) -> Result<Call, DbErr> {
    Ok(Call {
        ledger: ledger::Model::from_query_result(r, "")?,
        owner_kind: r.try_get("", "owner_kind")?,
        owner_name: r.try_get("", "owner_name")?,
    })
}

/// One line of the daily export.
pub struct DailyLine {
    pub day: i64,
    pub name: String,
    pub spend: Spend,
}

/// The roll-up's lines for days `from..=to` (a batch of the export), by
/// day and then name, with each owner's name.
pub async fn daily_lines<C: ConnectionTrait>(
    c: &C,
    scope: Scope,
    group: Grouping,
    from: i64,
    to: i64,
) -> Result<Vec<DailyLine>, DbErr> {
    let (name, join, key) = match group {
        Grouping::Model => ("d.model", "", "d.model"),
        Grouping::Client => (
            "COALESCE(o.name, '')",
            "LEFT JOIN clients o ON o.id = d.owner_id",
            "d.owner_id, o.name",
        ),
        Grouping::User => (
            "COALESCE(o.username, '')",
            "LEFT JOIN users o ON o.id = d.owner_id",
            "d.owner_id, o.username",
        ),
    };
    let (cond, extra) = scope.condition("d.owner_kind", "d.owner_id");
    let sql = format!(
        "SELECT d.day, {name}, {SUMS} FROM usage_daily d {join} \
         WHERE d.day >= ? AND d.day <= ?{}{cond} GROUP BY d.day, {key} ORDER BY d.day, 2",
        kind_filter(group, "d.owner_kind")
    );
    let mut values: Vec<Value> = vec![from.into(), to.into()];
    values.extend(extra);
    let rows = c.query_all(statement(c, &sql, values)).await?;
    rows.iter()
        .map(|r| {
            Ok(DailyLine {
                day: col(r, 0)?,
                name: col(r, 1)?,
                spend: spend_at(r, 2)?,
            })
        })
        .collect()
}

/// The `/usage` page's data for `u`, from what the page asked for.
pub async fn report_for(
    ctx: &super::AppContext,
    u: &SessionUser,
    from: &str,
    to: &str,
    group: &str,
) -> Result<SpendReport, ConsoleError> {
    let scope = Scope::of(u)?;
    let today = super::now_ms().div_euclid(crate::domain::time::DAY_MS);
    let (range, group) = parse_query(from, to, group, today)?;
    Ok(report(&ctx.db, scope, range, group).await?)
}

/// What a drill-down page asked for, as text from its address.
pub struct CallsAsked<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub group: &'a str,
    pub name: Option<&'a str>,
    pub before: Option<&'a str>,
}

/// Checks who may see which calls, and parses the rest: the scope, what to
/// list, the range and where to continue.
pub async fn resolve_calls<C: ConnectionTrait>(
    c: &C,
    u: &SessionUser,
    asked: &CallsAsked<'_>,
) -> Result<(Scope, Calls, DayRange, Grouping, Option<Cursor>), ConsoleError> {
    let scope = Scope::of(u)?;
    let today = super::now_ms().div_euclid(crate::domain::time::DAY_MS);
    let (range, group) = parse_query(asked.from, asked.to, asked.group, today)?;
    let before = match asked.before.filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(
            Cursor::parse(b)
                .ok_or_else(|| refused_input("That page of calls is unknown.".into()))?,
        ),
    };
    let which = calls_target(c, u, scope, group, asked.name).await?;
    Ok((scope, which, range, group, before))
}

/// A page of the drill-down for `u`.
pub async fn calls_page_for(
    ctx: &super::AppContext,
    u: &SessionUser,
    asked: &CallsAsked<'_>,
) -> Result<crate::view::CallsPage, ConsoleError> {
    use crate::domain::spend::CALLS_PAGE;
    let (scope, which, range, group, before) = resolve_calls(&ctx.db, u, asked).await?;
    let mut rows = calls(&ctx.db, scope, &which, range, before, CALLS_PAGE + 1).await?;
    let next = if rows.len() as u64 > CALLS_PAGE {
        rows.truncate(usize::try_from(CALLS_PAGE).unwrap_or(usize::MAX));
        rows.last().map(|r| r.cursor().text())
    } else {
        None
    };
    let rows = rows
        .into_iter()
        .map(|c| CallRow {
            id: c.ledger.id,
            owner: format!("{} {}", c.owner_kind, c.owner_name),
            row: ledger_row(c.ledger),
        })
        .collect();
    Ok(crate::view::CallsPage {
        from: day_label(range.from),
        to: day_label(range.to),
        group,
        name: asked.name.map(str::to_string),
        rows,
        next,
    })
}
