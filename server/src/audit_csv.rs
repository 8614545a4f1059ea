//! `GET /audit.csv?actor=…&action=…&target=…&from=…&to=…`: the audit trail,
//! filtered as on `/audit`, as CSV for admins. Streamed: rows are read and
//! written a batch at a time, so an export of a million entries holds one
//! batch in memory. The session cookie and the admin role are checked here,
//! as the server functions check them.

use app::domain::audit::{AuditFilter, AuditQuery, CSV_HEADER};
use app::domain::text::csv_line;
use app::domain::time::rfc3339;
use app::ssr::entities::audit_log;
use app::ssr::session::{self, Role};
use app::ssr::{audit, AppContext};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sea_orm::DatabaseConnection;

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// 401 without a live session, 403 for anyone but an admin, 400 for a bad
/// filter; otherwise the CSV.
pub async fn export(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(filter): Query<AuditFilter>,
) -> Response {
    let token = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(session::token_from_cookie_header);
    let user = match token {
        Some(t) => session::lookup(&ctx.db, &t).await,
        None => Ok(None),
    };
    match user {
        Err(e) => {
            tracing::error!("audit export: cannot look up the session: {e}");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on the server; the details are in its log.",
            );
        }
        Ok(None) => return refuse(StatusCode::UNAUTHORIZED, "Sign in first."),
        Ok(Some(u)) if u.role != Role::Admin => {
            return refuse(StatusCode::FORBIDDEN, "Only admins may do this.")
        }
        Ok(Some(_)) => {}
    }
    let query = match filter.query() {
        Ok(q) => q,
        Err(m) => return refuse(StatusCode::BAD_REQUEST, &m),
    };
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tollgate-audit.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(rows(ctx.db.clone(), query)),
    )
        .into_response()
}

/// Where the export is: the header next, or the entries after a `seq`.
enum Next {
    Header,
    After(i64),
    Done,
}

/// The header, then one chunk per batch of entries, oldest first. A database
/// error ends the stream with an error, so the client sees a broken
/// download rather than a short file that looks complete.
fn rows(
    db: DatabaseConnection,
    query: AuditQuery,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(Next::Header, move |next| {
        let (db, query) = (db.clone(), query.clone());
        async move {
            match next {
                Next::Done => None,
                Next::Header => Some((Ok(Bytes::from(csv_line(CSV_HEADER))), Next::After(0))),
                Next::After(after) => match audit::batch(&db, &query, after).await {
                    Err(e) => {
                        tracing::error!("audit export failed after entry {after}: {e}");
                        Some((Err(std::io::Error::other(e.to_string())), Next::Done))
                    }
                    Ok(batch) if batch.is_empty() => None,
                    Ok(batch) => {
                        let last = batch.last().map_or(after, |r| r.seq);
                        let full = batch.len() as u64 == audit::BATCH;
                        let text: String = batch.iter().map(line).collect();
                        let next = if full { Next::After(last) } else { Next::Done };
                        Some((Ok(Bytes::from(text)), next))
                    }
                },
            }
        }
    })
}

fn line(r: &audit_log::Model) -> String {
    let (seq, time) = (r.seq.to_string(), rfc3339(r.at_ms));
    csv_line([
        seq.as_str(),
        time.as_str(),
        r.actor.as_str(),
        r.action.as_str(),
        r.target.as_str(),
        r.addr.as_str(),
        r.detail.as_str(),
        r.prev_hash.as_str(),
        r.hash.as_str(),
    ])
}
