//! Keys, their owners and consents, kept in memory so that a steady-state
//! call makes no database round trip before it goes upstream.
//!
//! Entries are dropped whenever the change counter moves (`ssr::changes`):
//! this process's own counter is checked on every read, so a change made on
//! this instance is never answered from the old entry once committed; the
//! shared counter in the database is polled every [`POLL`], so a change made
//! on another instance (or by `tollgate keys revoke` on the host) takes
//! effect here within that. Expiry is checked on every read. Only keys that
//! authenticated are kept, so the map is bounded by the keys that exist.

use app::ssr::keys::{authenticate, AuthError, KeyOwner, LAST_USED_GRANULARITY_MS};
use app::ssr::owners::OwnerKind;
use app::ssr::{changes, consents, sha256_hex};
use sea_orm::{DatabaseConnection, DbErr};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the shared change counter is read.
pub const POLL: Duration = Duration::from_millis(250);

struct Entry {
    owner: KeyOwner,
    /// When `last_used_at` was last queued for this key (Unix ms).
    touched_at: i64,
}

#[derive(Default)]
struct State {
    /// The counters the entries below were read under.
    local: u64,
    shared: i64,
    keys: HashMap<String, Entry>,
    consents: HashMap<(&'static str, i64), Arc<BTreeSet<String>>>,
}

#[derive(Clone)]
pub struct Directory {
    db: DatabaseConnection,
    state: Arc<RwLock<State>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Drops everything if this process changed something since it was read.
    fn fresh(&mut self) {
        let local = changes::local();
        if local != self.local {
            self.keys.clear();
            self.consents.clear();
            self.local = local;
        }
    }
}

impl Directory {
    /// Starts the poller of the shared change counter.
    pub fn start(db: DatabaseConnection) -> Directory {
        let dir = Directory {
            db,
            state: Arc::new(RwLock::new(State::default())),
        };
        let poller = dir.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                match changes::counter(&poller.db).await {
                    Ok(n) => poller.saw_shared(n),
                    Err(e) => {
                        // Unknown changes: trust nothing kept.
                        tracing::warn!("cannot read the change counter: {e}");
                        poller.saw_shared(i64::MIN);
                    }
                }
            }
        });
        dir
    }

    fn saw_shared(&self, n: i64) {
        let mut s = write(&self.state);
        if s.shared != n {
            s.keys.clear();
            s.consents.clear();
            s.shared = n;
        }
    }

    /// The owner of a presented key, from memory when it was seen before.
    /// Returns whether `last_used_at` should be recorded now.
    pub async fn authenticate(
        &self,
        presented: &str,
        now: i64,
    ) -> Result<(KeyOwner, bool), AuthError> {
        app::domain::keys::check_format(presented).map_err(AuthError::Malformed)?;
        let hash = sha256_hex(presented.as_bytes());
        {
            let mut s = write(&self.state);
            s.fresh();
            if let Some(e) = s.keys.get_mut(&hash) {
                if e.owner.expires_at.is_some_and(|t| t <= now) {
                    return Err(AuthError::Expired);
                }
                let touch = now - e.touched_at >= LAST_USED_GRANULARITY_MS;
                if touch {
                    e.touched_at = now;
                }
                return Ok((e.owner.clone(), touch));
            }
        }
        let before = self.stamp();
        let owner = authenticate(&self.db, presented, now).await?;
        let touch = owner.touch_due;
        let mut s = write(&self.state);
        s.fresh();
        // Kept only if nothing changed while it was read.
        if (s.local, s.shared) == before {
            s.keys.insert(
                hash,
                Entry {
                    owner: owner.clone(),
                    touched_at: if touch {
                        now
                    } else {
                        now - LAST_USED_GRANULARITY_MS / 2
                    },
                },
            );
        }
        Ok((owner, touch))
    }

    fn stamp(&self) -> (u64, i64) {
        let mut s = write(&self.state);
        s.fresh();
        (s.local, s.shared)
    }

    /// The graylisted models this owner has consented to.
    pub async fn consents(
        &self,
        kind: OwnerKind,
        owner_id: i64,
    ) -> Result<Arc<BTreeSet<String>>, DbErr> {
        let k = (kind.as_str(), owner_id);
        {
            let mut s = write(&self.state);
            s.fresh();
            if let Some(set) = s.consents.get(&k) {
                return Ok(set.clone());
            }
        }
        let before = self.stamp();
        let set = Arc::new(consents::consented_models(&self.db, kind, owner_id).await?);
        let mut s = write(&self.state);
        s.fresh();
        if (s.local, s.shared) == before {
            s.consents.insert(k, set.clone());
        }
        Ok(set)
    }

    /// Keys kept in memory (for tests and `/healthz`).
    pub fn len(&self) -> usize {
        read(&self.state).keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
