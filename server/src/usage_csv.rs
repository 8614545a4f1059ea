//! The usage explorer's CSV exports, streamed: `GET /usage.csv` (the daily
//! roll-up by client, user or model) and `GET /usage/calls.csv` (the ledger
//! rows behind it). Each checks the session cookie and the role itself, with
//! the same scope as the page (admins everything, managers their clients,
//! users 403), then writes the rows in batches as they are read: a few days
//! of the roll-up, or a keyset page of the ledger, at a time, never the
//! whole result. A database error after the first byte ends the body early,
//! so the download fails rather than looking complete.

use app::domain::money::format_coins;
use app::domain::text::csv_cell;
use app::domain::time::day_label;
use app::domain::time::rfc3339;
use app::ssr::actions::ConsoleError;
use app::ssr::session::{self, SessionUser};
use app::ssr::usage::{self, Calls, CallsAsked, DailyLine, Scope};
use app::ssr::AppContext;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream, StreamExt};
use sea_orm::DatabaseConnection;

/// Days of the roll-up per batch of `/usage.csv`.
const DAYS_PER_BATCH: i64 = 7;
/// Ledger rows per batch of `/usage/calls.csv`.
const CALLS_PER_BATCH: u64 = 1000;

pub fn routes() -> Router<AppContext> {
    Router::new()
        .route("/usage.csv", get(daily))
        .route("/usage/calls.csv", get(calls))
}

/// What an export link asks for; everything optional, as on the page.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Asked {
    from: String,
    to: String,
    group: String,
    name: Option<String>,
}

fn refusal(e: ConsoleError) -> Response {
    match e {
        ConsoleError::Refused { status, message } => (status, message).into_response(),
        ConsoleError::Internal(detail) => {
            tracing::error!("usage export failed: {detail}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on the server; the details are in its log.",
            )
                .into_response()
        }
    }
}

/// The signed-in user of the session cookie, as the console's guard finds it.
async fn caller(ctx: &AppContext, headers: &HeaderMap) -> Result<SessionUser, ConsoleError> {
    let token = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(session::token_from_cookie_header);
    let user = match token {
        Some(t) => session::lookup(&ctx.db, &t).await?,
        None => None,
    };
    user.ok_or_else(|| ConsoleError::refused(StatusCode::UNAUTHORIZED, "Sign in first."))
}

fn csv(
    name: &str,
    body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn failed(what: &str, e: &sea_orm::DbErr) -> std::io::Error {
    tracing::error!("usage export stopped while reading {what}: {e}");
    std::io::Error::other("the export stopped; see the server log")
}

async fn daily(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(q): Query<Asked>,
) -> Response {
    let today = app::ssr::now_ms().div_euclid(app::domain::time::DAY_MS);
    let parsed = caller(&ctx, &headers).await.and_then(|u| {
        let scope = Scope::of(&u)?;
        usage::parse_query(&q.from, &q.to, &q.group, today).map(|(r, g)| (scope, r, g))
    });
    let (scope, range, group) = match parsed {
        Ok(p) => p,
        Err(e) => return refusal(e),
    };
    let head = format!(
        "day,{},calls,refused,tokens_in,tokens_out,coins\r\n",
        group.as_str()
    );
    let db = ctx.db.clone();
    let batches = stream::unfold(Some(range.from), move |next| {
        let db = db.clone();
        async move {
            let from = next.filter(|d| *d <= range.to)?;
            let to = (from + DAYS_PER_BATCH - 1).min(range.to);
            Some(
                match usage::daily_lines(&db, scope, group, from, to).await {
                    Ok(lines) => (Ok(daily_batch(&lines)), Some(to + 1)),
                    Err(e) => (Err(failed("the roll-up", &e)), None),
                },
            )
        }
    });
    let body =
        stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }).chain(batches);
    csv(
        &format!(
            "usage-{}-{}.csv",
            day_label(range.from),
            day_label(range.to)
        ),
        body,
    )
}

fn daily_batch(lines: &[DailyLine]) -> Bytes {
    let mut out = String::with_capacity(lines.len() * 64);
    for l in lines {
        let s = &l.spend;
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\r\n",
            day_label(l.day),
            csv_cell(&l.name),
            s.calls,
            s.refused,
            s.tokens_in,
            s.tokens_out,
            format_coins(s.coins)
        ));
    }
    Bytes::from(out)
}

const CALLS_HEAD: &str = "id,time,owner_kind,owner,model,deployment,code,tokens_in,tokens_out,coins,cost,request_id,outcome\r\n";

async fn calls(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(q): Query<Asked>,
) -> Response {
    let u = match caller(&ctx, &headers).await {
        Ok(u) => u,
        Err(e) => return refusal(e),
    };
    let asked = CallsAsked {
        from: &q.from,
        to: &q.to,
        group: &q.group,
        name: q.name.as_deref(),
        before: None,
    };
    let (scope, which, range, group, _) = match usage::resolve_calls(&ctx.db, &u, &asked).await {
        Ok(r) => r,
        Err(e) => return refusal(e),
    };
    let name = format!(
        "calls-{}-{}-{}.csv",
        group.as_str(),
        day_label(range.from),
        day_label(range.to)
    );
    let body =
        stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(CALLS_HEAD.as_bytes())) })
            .chain(call_batches(ctx.db.clone(), scope, which, range));
    csv(&name, body)
}

/// Keyset pages of the ledger, newest first, until one comes back short.
fn call_batches(
    db: DatabaseConnection,
    scope: Scope,
    which: Calls,
    range: app::domain::spend::DayRange,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    // `Some(cursor)`: more to read, after `cursor` if there is one.
    stream::unfold(Some(None), move |state| {
        let (db, which) = (db.clone(), which.clone());
        async move {
            let before = state?;
            Some(
                match usage::calls(&db, scope, &which, range, before, CALLS_PER_BATCH).await {
                    Ok(rows) => {
                        let next = (rows.len() as u64 == CALLS_PER_BATCH)
                            .then(|| rows.last().map(|r| r.cursor()));
                        (Ok(calls_batch(&rows)), next)
                    }
                    Err(e) => (Err(failed("the ledger", &e)), None),
                },
            )
        }
    })
}

fn calls_batch(rows: &[usage::Call]) -> Bytes {
    let mut out = String::with_capacity(rows.len() * 160);
    for c in rows {
        let l = &c.ledger;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            l.id,
            rfc3339(l.created_at),
            csv_cell(&c.owner_kind),
            csv_cell(&c.owner_name),
            csv_cell(&l.model),
            csv_cell(&l.deployment),
            csv_cell(&l.code),
            l.tokens_in,
            l.tokens_out,
            format_coins(l.coins_micro),
            format_coins(l.cost_micro),
            csv_cell(&l.request_id),
            csv_cell(&l.outcome)
        ));
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_lines_are_csv() {
        let lines = [DailyLine {
            day: 20_786,
            name: "=cmd|' /C calc'!A0".into(),
            spend: app::view::Spend {
                calls: 3,
                refused: 1,
                tokens_in: 10,
                tokens_out: 20,
                coins: 1_500_000,
            },
        }];
        assert_eq!(
            daily_batch(&lines),
            "2026-11-29,'=cmd|' /C calc'!A0,3,1,10,20,1.5\r\n"
        );
    }
}
