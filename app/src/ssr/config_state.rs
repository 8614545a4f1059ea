//! The `config_state` row: which config generation is in force and whether
//! the last reload worked. Generation counts distinct applied contents, so
//! applying the same file again (or from a second instance) does not bump it.

use super::entities::config_state;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

const ROW: i64 = 1;

async fn ensure_row<C: ConnectionTrait>(c: &C, now: i64) -> Result<(), DbErr> {
    let row = config_state::ActiveModel {
        id: Set(ROW),
        generation: Set(0),
        content_hash: Set(String::new()),
        applied_at: Set(now),
        last_reload_ok: Set(true),
        last_error: Set(None),
        last_error_at: Set(None),
        last_plan: Set(None),
    };
    config_state::Entity::insert(row)
        .on_conflict(
            OnConflict::column(config_state::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}

/// Records that the config with `hash` is applied, with what it changed
/// (kept only when the content is new); returns its generation.
pub async fn record_applied<C: ConnectionTrait>(
    c: &C,
    hash: &str,
    plan: &str,
    now: i64,
) -> Result<i64, DbErr> {
    ensure_row(c, now).await?;
    config_state::Entity::update_many()
        .col_expr(
            config_state::Column::LastPlan,
            Expr::value(Some(plan.to_string())),
        )
        .col_expr(
            config_state::Column::Generation,
            Expr::col(config_state::Column::Generation).add(1),
        )
        .col_expr(config_state::Column::ContentHash, Expr::value(hash))
        .col_expr(config_state::Column::AppliedAt, Expr::value(now))
        .filter(config_state::Column::Id.eq(ROW))
        .filter(config_state::Column::ContentHash.ne(hash))
        .exec(c)
        .await?;
    config_state::Entity::update_many()
        .col_expr(config_state::Column::LastReloadOk, Expr::value(true))
        .col_expr(
            config_state::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(config_state::Column::Id.eq(ROW))
        .filter(config_state::Column::LastReloadOk.eq(false))
        .exec(c)
        .await?;
    Ok(get(c).await?.map_or(0, |r| r.generation))
}

/// Records a failed reload; the config in force is unchanged.
pub async fn record_failure<C: ConnectionTrait>(
    c: &C,
    message: &str,
    now: i64,
) -> Result<(), DbErr> {
    ensure_row(c, now).await?;
    config_state::Entity::update_many()
        .col_expr(config_state::Column::LastReloadOk, Expr::value(false))
        .col_expr(
            config_state::Column::LastError,
            Expr::value(Some(message.to_string())),
        )
        .col_expr(config_state::Column::LastErrorAt, Expr::value(Some(now)))
        .filter(config_state::Column::Id.eq(ROW))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(c: &C) -> Result<Option<config_state::Model>, DbErr> {
    config_state::Entity::find_by_id(ROW).one(c).await
}
