use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

pub(crate) fn id(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}
pub(crate) fn big(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .to_owned()
}
pub(crate) fn big_null(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .null()
        .to_owned()
}
pub(crate) fn text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .string()
        .not_null()
        .to_owned()
}
fn text_null(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).text().null().to_owned()
}
pub(crate) fn long_text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .to_owned()
}
pub(crate) fn boolean(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .boolean()
        .not_null()
        .to_owned()
}

pub(crate) fn table(name: &str, cols: Vec<ColumnDef>) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(Alias::new(name)).if_not_exists();
    for mut c in cols {
        t.col(&mut c);
    }
    t.to_owned()
}

fn unique_index(name: &str, table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name)
        .table(Alias::new(table))
        .unique()
        .if_not_exists();
    for c in cols {
        i.col(Alias::new(*c));
    }
    i.to_owned()
}

pub(crate) fn index(name: &str, table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(Alias::new(table)).if_not_exists();
    for c in cols {
        i.col(Alias::new(*c));
    }
    i.to_owned()
}

const TABLES: &[&str] = &[
    "users",
    "sessions",
    "clients",
    "client_managers",
    "api_keys",
    "pools",
    "reservations",
    "ledger",
    "access_policies",
    "consents",
    "config_state",
    "login_failures",
];

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "users",
            vec![
                id("id"),
                text("username"),
                text("password_hash"),
                text("role"),
                boolean("active"),
                big("created_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index("ux_users_username", "users", &["username"]))
            .await?;

        m.create_table(table(
            "sessions",
            vec![
                ColumnDef::new(Alias::new("id"))
                    .string()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                big("user_id"),
                big("created_at"),
                big("last_seen_at"),
            ],
        ))
        .await?;
        m.create_index(index("ix_sessions_user", "sessions", &["user_id"]))
            .await?;

        m.create_table(table(
            "clients",
            vec![
                id("id"),
                text("name"),
                big_null("created_by"),
                big("created_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index("ux_clients_name", "clients", &["name"]))
            .await?;

        m.create_table(table(
            "client_managers",
            vec![
                id("id"),
                big("client_id"),
                big("user_id"),
                big("created_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index(
            "ux_client_managers",
            "client_managers",
            &["client_id", "user_id"],
        ))
        .await?;

        m.create_table(table(
            "api_keys",
            vec![
                id("id"),
                text("owner_kind"),
                big("owner_id"),
                text("secret_hash"),
                text("prefix"),
                text("label"),
                big_null("created_by"),
                big("created_at"),
                big_null("last_used_at"),
                big_null("expires_at"),
                big_null("revoked_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index(
            "ux_api_keys_hash",
            "api_keys",
            &["secret_hash"],
        ))
        .await?;
        m.create_index(index(
            "ix_api_keys_owner",
            "api_keys",
            &["owner_kind", "owner_id"],
        ))
        .await?;
        m.create_index(index("ix_api_keys_prefix", "api_keys", &["prefix"]))
            .await?;

        m.create_table(table(
            "pools",
            vec![
                id("id"),
                text("owner_kind"),
                big("owner_id"),
                big("max_micro"),
                boolean("unlimited"),
                big("refresh_micro"),
                big("balance_micro"),
                big("refilled_at"),
                big("updated_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index(
            "ux_pools_owner",
            "pools",
            &["owner_kind", "owner_id"],
        ))
        .await?;

        m.create_table(table(
            "reservations",
            vec![
                ColumnDef::new(Alias::new("request_id"))
                    .string()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                big("pool_id"),
                big_null("key_id"),
                text("model"),
                big("amount_micro"),
                big("created_at"),
            ],
        ))
        .await?;

        m.create_table(table(
            "ledger",
            vec![
                id("id"),
                big("pool_id"),
                big_null("key_id"),
                text("model"),
                big("tokens_in"),
                big("tokens_out"),
                big("coins_micro"),
                big("created_at"),
                text("request_id"),
                text("outcome"),
            ],
        ))
        .await?;
        m.create_index(unique_index("ux_ledger_request", "ledger", &["request_id"]))
            .await?;
        m.create_index(index(
            "ix_ledger_pool_time",
            "ledger",
            &["pool_id", "created_at"],
        ))
        .await?;

        m.create_table(table(
            "access_policies",
            vec![
                id("id"),
                text("owner_kind"),
                big("owner_id"),
                text("source"),
                text("default_mode"),
                long_text("whitelist"),
                long_text("blacklist"),
                long_text("graylist"),
                big("updated_at"),
            ],
        ))
        .await?;
        m.create_index(unique_index(
            "ux_access_policies_owner",
            "access_policies",
            &["owner_kind", "owner_id"],
        ))
        .await?;

        m.create_table(table(
            "consents",
            vec![
                id("id"),
                text("owner_kind"),
                big("owner_id"),
                text("model"),
                big_null("recorded_by"),
                big("recorded_at"),
                big_null("revoked_at"),
            ],
        ))
        .await?;
        m.create_index(index(
            "ix_consents_owner",
            "consents",
            &["owner_kind", "owner_id"],
        ))
        .await?;

        m.create_table(table(
            "config_state",
            vec![
                id("id"),
                big("generation"),
                text("content_hash"),
                big("applied_at"),
                boolean("last_reload_ok"),
                text_null("last_error"),
                big_null("last_error_at"),
            ],
        ))
        .await?;

        m.create_table(table(
            "login_failures",
            vec![id("id"), text("username"), big("at")],
        ))
        .await?;
        m.create_index(index(
            "ix_login_failures",
            "login_failures",
            &["username", "at"],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in TABLES.iter().rev() {
            m.drop_table(Table::drop().table(Alias::new(*t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
