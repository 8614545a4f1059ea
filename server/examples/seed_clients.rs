//! Fills a database with many clients and keys, for measuring the console.
//! Usage: seed_clients DATABASE_URL CONFIG CLIENTS KEYS
#![allow(clippy::print_stdout)]

use app::ssr::owners::{create_client, OwnerKind};
use app::ssr::{config_file, db, keys, now_ms};
use sea_orm::TransactionTrait;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, config, clients, keys_n] = args.as_slice() else {
        return Err("usage: seed_clients DATABASE_URL CONFIG CLIENTS KEYS".into());
    };
    let (clients, keys_n): (usize, usize) = (clients.parse()?, keys_n.parse()?);
    let loaded = config_file::load(std::path::Path::new(config))?;
    let conn = db::connect(url).await?;
    db::migrate(&conn).await?;
    let mut ids = Vec::with_capacity(clients);
    for i in 0..clients {
        let c = create_client(
            &conn,
            &loaded.config,
            &format!("seed-{i:05}"),
            None,
            now_ms(),
        )
        .await?;
        ids.push(c.id);
    }
    let txn = conn.begin().await?;
    for k in 0..keys_n {
        keys::create(
            &txn,
            OwnerKind::Client,
            ids[k % ids.len()],
            "seed",
            None,
            None,
            now_ms(),
        )
        .await?;
    }
    txn.commit().await?;
    println!("seeded {clients} clients and {keys_n} keys");
    Ok(())
}
