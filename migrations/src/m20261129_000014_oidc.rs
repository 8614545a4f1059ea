//! Single sign-on with OpenID Connect. `oidc_identities` links a provider's
//! account (`issuer` + `subject`, never the name or email, which a provider
//! may let people change) to a user. `oidc_logins` holds each sign-in that was
//! started and not yet finished: keyed by the SHA-256 of its `state`, bound to
//! the browser by the SHA-256 of a cookie (from which the PKCE verifier and the
//! nonce are derived, so nothing here is secret), used once and kept 10 minutes.

use super::m20261128_000001_initial::{big, id, index, long_text, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "oidc_identities",
            vec![
                id("id"),
                big("user_id"),
                long_text("issuer"),
                long_text("subject"),
                big("created_at"),
            ],
        ))
        .await?;
        m.create_index(
            Index::create()
                .name("ux_oidc_identities_subject")
                .table(Alias::new("oidc_identities"))
                .col(Alias::new("issuer"))
                .col(Alias::new("subject"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_oidc_identities_user",
            "oidc_identities",
            &["user_id"],
        ))
        .await?;
        m.create_table(table(
            "oidc_logins",
            vec![
                ColumnDef::new(Alias::new("id"))
                    .string()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                text("browser"),
                long_text("issuer"),
                text("addr"),
                big("created_at"),
            ],
        ))
        .await?;
        m.create_index(index(
            "ix_oidc_logins_created",
            "oidc_logins",
            &["created_at"],
        ))
        .await?;
        m.create_index(index("ix_oidc_logins_addr", "oidc_logins", &["addr"]))
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["oidc_logins", "oidc_identities"] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
