//! Clients and users as owners of pools, keys, policies and consents.

use super::entities::{client, client_manager, user};
use super::owner_settings::apply_owner;
use crate::domain::config::Config;
use crate::domain::names::validate_owner_name;
pub use crate::domain::owner::{OwnerKind, Role};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder,
};

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("{0}")]
    InvalidName(String),
    #[error("`{0}` already exists; choose another name")]
    Duplicate(String),
    #[error("an admin already exists; sign in instead")]
    AdminExists,
    #[error("this would leave no active admin; make another user an admin first")]
    LastAdmin,
    #[error(transparent)]
    Db(#[from] DbErr),
}

pub async fn client_by_name<C: ConnectionTrait>(
    c: &C,
    name: &str,
) -> Result<Option<client::Model>, DbErr> {
    client::Entity::find()
        .filter(client::Column::Name.eq(name))
        .one(c)
        .await
}

pub async fn user_by_name<C: ConnectionTrait>(
    c: &C,
    name: &str,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Username.eq(name))
        .one(c)
        .await
}

pub async fn all_clients<C: ConnectionTrait>(c: &C) -> Result<Vec<client::Model>, DbErr> {
    client::Entity::find()
        .order_by_asc(client::Column::Name)
        .all(c)
        .await
}

pub async fn all_users<C: ConnectionTrait>(c: &C) -> Result<Vec<user::Model>, DbErr> {
    user::Entity::find()
        .order_by_asc(user::Column::Username)
        .all(c)
        .await
}

/// Creates a client and, in the same transaction, gives it its named entry or
/// the defaults from the config in force, so it is usable at once.
pub async fn create_client(
    db: &DatabaseConnection,
    config: &Config,
    name: &str,
    created_by: Option<i64>,
    now: i64,
) -> Result<client::Model, OwnerError> {
    validate_owner_name(name).map_err(OwnerError::InvalidName)?;
    let txn = super::db::begin_write(db).await?;
    if client_by_name(&txn, name).await?.is_some() {
        return Err(OwnerError::Duplicate(name.to_string()));
    }
    let model = client::ActiveModel {
        name: Set(name.to_string()),
        created_by: Set(created_by),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| match client_by_name_conflict(&e) {
        true => OwnerError::Duplicate(name.to_string()),
        false => OwnerError::Db(e),
    })?;
    let (settings, source) = config.clients.settings_for(name);
    apply_owner(&txn, OwnerKind::Client, model.id, settings, source, now).await?;
    super::changes::bump(&txn).await?;
    txn.commit().await?;
    Ok(model)
}

fn client_by_name_conflict(e: &DbErr) -> bool {
    let s = e.to_string().to_lowercase();
    s.contains("unique") || s.contains("duplicate")
}

/// Creates a user with an already hashed password, and applies its settings.
pub async fn create_user(
    db: &DatabaseConnection,
    config: &Config,
    username: &str,
    password_hash: &str,
    role: &str,
    now: i64,
) -> Result<user::Model, OwnerError> {
    insert_user(db, config, username, password_hash, role, now, false).await
}

/// Creates the first admin, in one transaction with the check that no
/// active admin exists yet (by `/setup`, whose token is good only until then).
pub async fn create_first_admin(
    db: &DatabaseConnection,
    config: &Config,
    username: &str,
    password_hash: &str,
    now: i64,
) -> Result<user::Model, OwnerError> {
    insert_user(
        db,
        config,
        username,
        password_hash,
        Role::Admin.as_str(),
        now,
        true,
    )
    .await
}

async fn insert_user(
    db: &DatabaseConnection,
    config: &Config,
    username: &str,
    password_hash: &str,
    role: &str,
    now: i64,
    only_if_no_admin: bool,
) -> Result<user::Model, OwnerError> {
    validate_owner_name(username).map_err(OwnerError::InvalidName)?;
    let txn = super::db::begin_write(db).await?;
    if only_if_no_admin {
        lock_users(&txn).await?;
        if admin_exists(&txn).await? {
            return Err(OwnerError::AdminExists);
        }
    }
    if user_by_name(&txn, username).await?.is_some() {
        return Err(OwnerError::Duplicate(username.to_string()));
    }
    let model = user::ActiveModel {
        username: Set(username.to_string()),
        password_hash: Set(password_hash.to_string()),
        role: Set(role.to_string()),
        active: Set(true),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let (settings, source) = config.users.settings_for(username);
    apply_owner(&txn, OwnerKind::User, model.id, settings, source, now).await?;
    txn.commit().await?;
    Ok(model)
}

/// On PostgreSQL, serialises transactions that decide on the set of admins
/// (SQLite's write transaction already does). The mode conflicts with itself
/// and with writes, not with plain reads such as session lookups.
async fn lock_users(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    Ok(())
}

/// Changes a user's role and/or active flag, refusing a change that would
/// leave no active admin. The check and the change are one transaction, so
/// two admins demoting each other at once cannot both succeed.
pub async fn update_role_or_active(
    db: &DatabaseConnection,
    user_id: i64,
    role: Option<&str>,
    active: Option<bool>,
) -> Result<user::Model, OwnerError> {
    let txn = super::db::begin_write(db).await?;
    lock_users(&txn).await?;
    let Some(current) = user::Entity::find_by_id(user_id).one(&txn).await? else {
        return Err(OwnerError::Db(DbErr::RecordNotFound(format!(
            "user {user_id}"
        ))));
    };
    let new_role = role.unwrap_or(&current.role).to_string();
    let new_active = active.unwrap_or(current.active);
    let admin = Role::Admin.as_str();
    let was_admin = current.role == admin && current.active;
    let stays_admin = new_role == admin && new_active;
    if was_admin && !stays_admin {
        let others = user::Entity::find()
            .filter(user::Column::Role.eq(Role::Admin.as_str()))
            .filter(user::Column::Active.eq(true))
            .filter(user::Column::Id.ne(user_id))
            .count(&txn)
            .await?;
        if others == 0 {
            return Err(OwnerError::LastAdmin);
        }
    }
    let mut am = current.into_active_model();
    am.role = Set(new_role);
    am.active = Set(new_active);
    let model = am.update(&txn).await?;
    super::changes::bump(&txn).await?;
    txn.commit().await?;
    Ok(model)
}

/// Stores a new password hash for a user.
pub async fn set_password_hash<C: ConnectionTrait>(
    c: &C,
    user: user::Model,
    password_hash: String,
) -> Result<user::Model, DbErr> {
    let mut am = user.into_active_model();
    am.password_hash = Set(password_hash);
    am.update(c).await
}

/// Whether an active admin exists.
pub async fn admin_exists<C: ConnectionTrait>(c: &C) -> Result<bool, DbErr> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(Role::Admin.as_str()))
        .filter(user::Column::Active.eq(true))
        .one(c)
        .await?
        .is_some())
}

/// Makes a user a manager of a client; already being one is not an error.
/// Returns whether they were not one before.
pub async fn add_manager<C: ConnectionTrait>(
    c: &C,
    client_id: i64,
    user_id: i64,
    now: i64,
) -> Result<bool, DbErr> {
    client_manager::Entity::insert(client_manager::ActiveModel {
        client_id: Set(client_id),
        user_id: Set(user_id),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            client_manager::Column::ClientId,
            client_manager::Column::UserId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(c)
    .await
    .map(|rows| rows > 0)
}

/// Stops a user managing a client; not being one is not an error. Returns
/// whether they were one.
pub async fn remove_manager<C: ConnectionTrait>(
    c: &C,
    client_id: i64,
    user_id: i64,
) -> Result<bool, DbErr> {
    client_manager::Entity::delete_many()
        .filter(client_manager::Column::ClientId.eq(client_id))
        .filter(client_manager::Column::UserId.eq(user_id))
        .exec(c)
        .await
        .map(|r| r.rows_affected > 0)
}
