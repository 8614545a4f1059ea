//! Sign-in sessions, stored in the database. The cookie holds a random token;
//! the database holds only its SHA-256. Cookies are HttpOnly and SameSite=Lax,
//! and Secure when the public URL is https.

use super::entities::{login_failure, session, user};
use super::{now_ms, sha256_hex};
pub use crate::domain::owner::Role;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, Statement,
};

pub const COOKIE: &str = "tg_session";
/// A session unused for this long ends.
pub const IDLE_TIMEOUT_MS: i64 = 12 * 3600 * 1000;
/// No session lives longer than this.
pub const ABSOLUTE_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;
/// Failed sign-ins per username within the window before sign-in is refused.
pub const MAX_FAILURES: u64 = 5;
/// Failed sign-ins per client address within the window before sign-in from
/// it is refused. Behind a reverse proxy every client shares its address.
pub const MAX_FAILURES_PER_ADDR: u64 = 100;
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

pub fn new_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub async fn create<C: ConnectionTrait>(c: &C, user_id: i64) -> Result<String, DbErr> {
    let token = new_token().map_err(DbErr::Custom)?;
    let now = now_ms();
    session::Entity::insert(session::ActiveModel {
        id: Set(sha256_hex(token.as_bytes())),
        user_id: Set(user_id),
        created_at: Set(now),
        last_seen_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    Ok(token)
}

/// The signed-in user for a session token, if the session is live and the user active.
pub async fn lookup<C: ConnectionTrait>(c: &C, token: &str) -> Result<Option<SessionUser>, DbErr> {
    let now = now_ms();
    let id = sha256_hex(token.as_bytes());
    let Some(s) = session::Entity::find_by_id(id.clone()).one(c).await? else {
        return Ok(None);
    };
    if now - s.last_seen_at > IDLE_TIMEOUT_MS || now - s.created_at > ABSOLUTE_TIMEOUT_MS {
        session::Entity::delete_by_id(id).exec(c).await?;
        return Ok(None);
    }
    let Some(u) = user::Entity::find_by_id(s.user_id).one(c).await? else {
        return Ok(None);
    };
    let Some(role) = Role::parse(&u.role).filter(|_| u.active) else {
        return Ok(None);
    };
    if now - s.last_seen_at > 60_000 {
        session::Entity::update_many()
            .col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(id))
            .exec(c)
            .await?;
    }
    Ok(Some(SessionUser {
        id: u.id,
        username: u.username,
        role,
    }))
}

pub async fn delete<C: ConnectionTrait>(c: &C, token: &str) -> Result<(), DbErr> {
    session::Entity::delete_by_id(sha256_hex(token.as_bytes()))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn delete_for_user<C: ConnectionTrait>(c: &C, user_id: i64) -> Result<(), DbErr> {
    session::Entity::delete_many()
        .filter(session::Column::UserId.eq(user_id))
        .exec(c)
        .await?;
    Ok(())
}

pub fn token_from_cookie_header(header: &str) -> Option<String> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        // Our tokens are 64 hex digits; anything much longer is not one of them.
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// A `Set-Cookie` value the browser's scripts cannot read (HttpOnly), sent
/// on top-level navigations from other sites but not on their requests
/// (SameSite=Lax), and only over HTTPS when `secure`. An empty `value` with
/// `max_age_secs` 0 deletes the cookie.
pub fn cookie(name: &str, value: &str, path: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

pub fn set_cookie(token: &str, secure: bool) -> String {
    cookie(COOKIE, token, "/", ABSOLUTE_TIMEOUT_MS / 1000, secure)
}

pub fn clear_cookie(secure: bool) -> String {
    cookie(COOKIE, "", "/", 0, secure)
}

/// What a sign-in attempt may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A failure was recorded in advance; the password may be checked once.
    Reserved,
    /// Too many failures for this name within the window.
    NameThrottled,
    /// Too many failures from this address within the window.
    AddrThrottled,
}

/// An arbitrary constant naming the PostgreSQL advisory lock that serialises
/// sign-in reservations across every instance sharing the database.
const RESERVATION_LOCK: i64 = 0x0074_676c_6f67_696e; // "tglogin"

/// Reserves one sign-in attempt for `username` from `addr` before the
/// password is checked: in one write transaction, it forgets failures older
/// than the window, counts the recent ones for the name and for the address,
/// and records a failure unless either is at its limit. So however many
/// attempts arrive at once, at most `MAX_FAILURES` passwords per name (and
/// `MAX_FAILURES_PER_ADDR` per address) are checked in a window, and the
/// table holds at most that many rows per name and per address. A correct
/// password then clears the name's failures (`clear_failures`).
pub async fn reserve_attempt(
    db: &DatabaseConnection,
    username: &str,
    addr: &str,
    now: i64,
) -> Result<Attempt, DbErr> {
    let txn = super::db::begin_write(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [RESERVATION_LOCK.into()],
        ))
        .await?;
    }
    let since = now - FAILURE_WINDOW_MS;
    login_failure::Entity::delete_many()
        .filter(login_failure::Column::At.lte(since))
        .exec(&txn)
        .await?;
    let for_name = login_failure::Entity::find()
        .filter(login_failure::Column::Username.eq(username))
        .filter(login_failure::Column::At.gt(since))
        .count(&txn)
        .await?;
    if for_name >= MAX_FAILURES {
        txn.commit().await?;
        return Ok(Attempt::NameThrottled);
    }
    let for_addr = login_failure::Entity::find()
        .filter(login_failure::Column::Addr.eq(addr))
        .filter(login_failure::Column::At.gt(since))
        .count(&txn)
        .await?;
    if for_addr >= MAX_FAILURES_PER_ADDR {
        txn.commit().await?;
        return Ok(Attempt::AddrThrottled);
    }
    login_failure::Entity::insert(login_failure::ActiveModel {
        username: Set(username.to_string()),
        at: Set(now),
        addr: Set(addr.to_string()),
        ..Default::default()
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(Attempt::Reserved)
}

pub async fn clear_failures<C: ConnectionTrait>(c: &C, username: &str) -> Result<(), DbErr> {
    login_failure::Entity::delete_many()
        .filter(login_failure::Column::Username.eq(username))
        .exec(c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let c = set_cookie("abc", false);
        assert!(
            c.starts_with("tg_session=abc;")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax")
        );
        assert!(!c.contains("Secure"));
        assert!(
            set_cookie("abc", true).ends_with("; Secure"),
            "Secure when the public URL is https"
        );
        assert!(clear_cookie(true).contains("Max-Age=0"));
        assert_eq!(
            token_from_cookie_header("a=1; tg_session=xyz; b=2").as_deref(),
            Some("xyz")
        );
        assert_eq!(token_from_cookie_header("tg_session="), None);
        assert_eq!(Role::parse("manager"), Some(Role::Manager));
        assert_eq!(Role::parse("root"), None);
    }
}
