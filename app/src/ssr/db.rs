//! Connecting to SQLite or PostgreSQL and running the migrations.

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, TransactionTrait,
};
use std::time::Duration;

/// The default database: a SQLite file under `data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tollgate.db";

/// Opens a connection pool. For SQLite the file (and its directory) is created
/// if missing, WAL is on and every commit is synced to disk.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    // A broken connection surfaces as a query error anyway; pinging on
    // every checkout would add a round trip to every request.
    opts.sqlx_logging(false)
        .test_before_acquire(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    if let Some(path) = sqlite_path(url) {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        opts.max_connections(8).map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false)
        });
    } else {
        opts.max_connections(16);
    }
    Database::connect(opts).await
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Begins a transaction that holds the write lock from its first statement.
/// On SQLite a deferred transaction that reads and then writes can fail with
/// SQLITE_BUSY instead of waiting, so it takes the lock up front with a write
/// that matches no row. On PostgreSQL row locks make this unnecessary.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        txn.execute_unprepared("UPDATE config_state SET generation = generation WHERE id = -1")
            .await?;
    }
    Ok(txn)
}

/// A hand-written statement with one parameter, written `{p}` in `sql`, in
/// the backend's placeholder syntax (`$1` on PostgreSQL, `?` on SQLite).
pub fn statement_with_one_param(
    backend: DbBackend,
    sql: &str,
    value: sea_orm::Value,
) -> sea_orm::Statement {
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    sea_orm::Statement::from_sql_and_values(backend, sql.replace("{p}", placeholder), [value])
}

/// A cheap round trip, for health checks.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}
