//! The audit trail's rules, without I/O: the actions it records, how an
//! entry is bounded and encoded for its hash, how a chain is checked link by
//! link, what a config apply changed, the page's filter, and CSV cells.
//!
//! An entry's hash is SHA-256 (hex) over [`hash_input`]: the JSON array
//! `[seq, at_ms, actor, action, target, addr, detail, prev_hash]`. The first
//! entry's `prev_hash` is [`GENESIS_HASH`]. SHA-256 itself is computed by
//! the caller (`ssr::audit`), so this module compiles for the browser too.

use super::config::Config;
use super::text::percent_encode;
use super::time::{parse_day, DAY_MS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The `prev_hash` of entry 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest stored actor, target, address and detail, in characters: what a
/// caller can make the trail store is bounded.
pub const MAX_ACTOR: usize = 128;
pub const MAX_TARGET: usize = 300;
pub const MAX_ADDR: usize = 64;
pub const MAX_DETAIL: usize = 1000;

/// What happened. The names are stable: they are stored, filtered on and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    ClientCreated,
    UserCreated,
    RoleChanged,
    UserDeactivated,
    UserReactivated,
    PasswordReset,
    KeyCreated,
    KeyRevoked,
    ConsentGiven,
    ConsentRevoked,
    ManagerAdded,
    ManagerRemoved,
    SignIn,
    SignInFailed,
    SignOut,
    ConfigReloaded,
    ConfigReloadFailed,
    AdminCreated,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Action::ClientCreated,
        Action::UserCreated,
        Action::RoleChanged,
        Action::UserDeactivated,
        Action::UserReactivated,
        Action::PasswordReset,
        Action::KeyCreated,
        Action::KeyRevoked,
        Action::ConsentGiven,
        Action::ConsentRevoked,
        Action::ManagerAdded,
        Action::ManagerRemoved,
        Action::SignIn,
        Action::SignInFailed,
        Action::SignOut,
        Action::ConfigReloaded,
        Action::ConfigReloadFailed,
        Action::AdminCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ClientCreated => "client_created",
            Action::UserCreated => "user_created",
            Action::RoleChanged => "role_changed",
            Action::UserDeactivated => "user_deactivated",
            Action::UserReactivated => "user_reactivated",
            Action::PasswordReset => "password_reset",
            Action::KeyCreated => "key_created",
            Action::KeyRevoked => "key_revoked",
            Action::ConsentGiven => "consent_given",
            Action::ConsentRevoked => "consent_revoked",
            Action::ManagerAdded => "manager_added",
            Action::ManagerRemoved => "manager_removed",
            Action::SignIn => "sign_in",
            Action::SignInFailed => "sign_in_failed",
            Action::SignOut => "sign_out",
            Action::ConfigReloaded => "config_reloaded",
            Action::ConfigReloadFailed => "config_reload_failed",
            Action::AdminCreated => "admin_created",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened, before the trail gives it a `seq`, a time and
/// its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A username, `cli`, `config`, or the name typed at a failed sign-in.
    pub actor: String,
    pub action: Action,
    /// What it happened to: `client:acme`, `user:bob`, `key:tg_abc (client:acme)`.
    pub target: String,
    /// The client's IP address; empty when there is none (the CLI, the config).
    pub addr: String,
    /// A short note: a role's old and new value, a reload's diff.
    pub detail: String,
}

impl Entry {
    pub fn new(actor: impl Into<String>, action: Action, target: impl Into<String>) -> Entry {
        Entry {
            actor: actor.into(),
            action,
            target: target.into(),
            addr: String::new(),
            detail: String::new(),
        }
    }

    pub fn addr(mut self, addr: impl Into<String>) -> Entry {
        self.addr = addr.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = detail.into();
        self
    }

    /// Each field cut to its limit, so a caller cannot make an entry huge.
    pub fn bounded(self) -> Entry {
        Entry {
            actor: truncate(&self.actor, MAX_ACTOR),
            action: self.action,
            target: truncate(&self.target, MAX_TARGET),
            addr: truncate(&self.addr, MAX_ADDR),
            detail: truncate(&self.detail, MAX_DETAIL),
        }
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `client:acme`, `user:bob`.
pub fn target(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

/// `key:tg_abc123 (client:acme)`.
pub fn key_target(prefix: &str, owner_kind: &str, owner_name: &str) -> String {
    format!("key:{prefix} ({owner_kind}:{owner_name})")
}

/// An entry as stored: what its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub addr: &'a str,
    pub detail: &'a str,
    pub prev_hash: &'a str,
}

/// The canonical encoding an entry's hash is computed over: a JSON array,
/// so no field's content can be mistaken for a separator.
pub fn hash_input(e: &Sealed<'_>) -> String {
    serde_json::json!([
        e.seq,
        e.at_ms,
        e.actor,
        e.action,
        e.target,
        e.addr,
        e.detail,
        e.prev_hash
    ])
    .to_string()
}

/// The first broken link `audit verify` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The entry's hash is not the hash of its contents.
    Edited { seq: i64 },
    /// The entry's `prev_hash` is not the previous entry's hash.
    Relinked { seq: i64 },
    /// Entries between `after` and `seq` are missing.
    Gap { seq: i64, after: i64 },
    /// The head records more entries than there are.
    Truncated { head: i64, last: i64 },
    /// The head records fewer entries than there are.
    BeyondHead { head: i64, last: i64 },
    /// The head's hash is not the last entry's.
    HeadMismatch { seq: i64 },
    /// The head's row is gone.
    HeadMissing,
}

fn missing(from: i64, to: i64) -> String {
    if from == to {
        format!("entry {from} is missing")
    } else {
        format!("entries {from} to {to} are missing")
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Break::Edited { seq } => {
                write!(f, "entry {seq}: its hash does not match its contents (edited?)")
            }
            Break::Relinked { seq } => write!(
                f,
                "entry {seq}: its prev_hash does not match the hash of entry {} (entry {} edited and rehashed, or replaced?)",
                seq - 1,
                seq - 1
            ),
            Break::Gap { seq, after: 0 } => {
                write!(f, "entry {seq} is the first entry: {}", missing(1, seq - 1))
            }
            Break::Gap { seq, after } => write!(
                f,
                "entry {seq} follows entry {after}: {}",
                missing(after + 1, seq - 1)
            ),
            Break::Truncated { head, last } => write!(
                f,
                "the trail ends at entry {last} but audit_head records entry {head}: {} (truncated?)",
                missing(last + 1, head)
            ),
            Break::BeyondHead { head, last } => write!(
                f,
                "entry {last} is past the last entry audit_head records ({head}): entries were added without the head"
            ),
            Break::HeadMissing => f.write_str(
                "audit_head has no row (deleted?); no entry can be appended until it is restored",
            ),
            Break::HeadMismatch { seq } => write!(
                f,
                "audit_head's hash does not match entry {seq}, the last entry (the head or entry {seq} was changed?)"
            ),
        }
    }
}

/// Walks a chain entry by entry, in `seq` order, holding only the last link.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    last_seq: i64,
    last_hash: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_string(),
        }
    }
}

impl ChainCheck {
    /// The `seq` of the last entry checked (0 before the first).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Checks the next entry: it follows the last without a gap, its stored
    /// hash is `computed` (the hash of its contents), and it links to the last.
    pub fn check(&mut self, e: &Sealed<'_>, stored: &str, computed: &str) -> Result<(), Break> {
        if e.seq != self.last_seq + 1 {
            return Err(Break::Gap {
                seq: e.seq,
                after: self.last_seq,
            });
        }
        if stored != computed {
            return Err(Break::Edited { seq: e.seq });
        }
        if e.prev_hash != self.last_hash {
            return Err(Break::Relinked { seq: e.seq });
        }
        self.last_seq = e.seq;
        self.last_hash = stored.to_string();
        Ok(())
    }

    /// Checks the head against the last entry; returns how many entries the
    /// chain holds.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<i64, Break> {
        if head_seq > self.last_seq {
            return Err(Break::Truncated {
                head: head_seq,
                last: self.last_seq,
            });
        }
        if head_seq < self.last_seq {
            return Err(Break::BeyondHead {
                head: head_seq,
                last: self.last_seq,
            });
        }
        if head_hash != self.last_hash {
            return Err(Break::HeadMismatch { seq: head_seq });
        }
        Ok(self.last_seq)
    }
}

/// Each entry of a config (`models.NAME`, `clients.default`, `clients.NAME`,
/// `users.…`, `server`) with its canonical JSON: two configs differ in an
/// entry exactly when its text differs. The metrics token is not serialised.
pub fn config_entries(config: &Config) -> BTreeMap<String, String> {
    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap_or_default()
    }
    let mut out = BTreeMap::new();
    out.insert("server".to_string(), json(&config.server));
    for (name, m) in &config.models {
        out.insert(format!("models.{name}"), json(m));
    }
    for (section, s) in [("clients", &config.clients), ("users", &config.users)] {
        out.insert(format!("{section}.default"), json(&s.default));
        for (name, o) in &s.named {
            out.insert(format!("{section}.{name}"), json(o));
        }
    }
    out
}

/// How an entry changed between two configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// The entries that differ between two digests (entry → any fingerprint).
pub fn config_diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => out.push((k.clone(), Change::Added)),
            Some(o) if o != v => out.push((k.clone(), Change::Changed)),
            Some(_) => {}
        }
    }
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), Change::Removed)),
    );
    out
}

/// How much of a reload's diff its entry lists before `and N more`.
const DIFF_LIST_CHARS: usize = 400;

/// `generation 4: clients.acme changed; models.gpt added`, bounded: after
/// about [`DIFF_LIST_CHARS`] characters the rest is counted, not listed.
pub fn reload_detail(generation: i64, diff: &[(String, Change)]) -> String {
    if diff.is_empty() {
        return format!("generation {generation}: no entries changed");
    }
    let mut listed = String::new();
    let mut shown = 0;
    for (entry, change) in diff {
        let item = format!("{} {}", truncate(entry, 80), change.as_str());
        if !listed.is_empty() && listed.len() + item.len() + 2 > DIFF_LIST_CHARS {
            break;
        }
        if !listed.is_empty() {
            listed.push_str("; ");
        }
        listed.push_str(&item);
        shown += 1;
    }
    let rest = diff.len() - shown;
    if rest > 0 {
        listed.push_str(&format!("; and {rest} more"));
    }
    format!("generation {generation}: {listed}")
}

/// `generation 4 stays in force: <the error's first line>`.
pub fn reload_failed_detail(generation: i64, error: &str) -> String {
    let first = error.lines().next().unwrap_or("").trim();
    format!(
        "generation {generation} stays in force: {}",
        truncate(first, 300)
    )
}

/// The `/audit` page's filter as typed (also its query string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditFilter {
    /// Exactly this actor.
    pub actor: String,
    /// One of [`Action::ALL`]'s names.
    pub action: String,
    /// A substring of the target (case-sensitive).
    pub target: String,
    /// `YYYY-MM-DD`, UTC, from the start of that day.
    pub from: String,
    /// `YYYY-MM-DD`, UTC, to the end of that day.
    pub to: String,
}

/// A filter read and checked: `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<Action>,
    pub target: Option<String>,
    /// Inclusive, Unix ms.
    pub from_ms: Option<i64>,
    /// Exclusive, Unix ms.
    pub until_ms: Option<i64>,
}

impl AuditFilter {
    pub fn query(&self) -> Result<AuditQuery, String> {
        let text = |s: &str, what: &str, max: usize| -> Result<Option<String>, String> {
            let s = s.trim();
            if s.chars().count() > max {
                return Err(format!("The {what} filter is at most {max} characters."));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        };
        let action = match self.action.trim() {
            "" => None,
            a => Some(Action::parse(a).ok_or_else(|| format!("There is no action `{a}`."))?),
        };
        let day = |s: &str, what: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            parse_day(s)
                .map(|day| day * DAY_MS)
                .map(Some)
                .ok_or_else(|| format!("The {what} date must look like 2026-11-29."))
        };
        let from_ms = day(&self.from, "from")?;
        let until_ms = day(&self.to, "to")?.map(|d| d + DAY_MS);
        if let (Some(f), Some(u)) = (from_ms, until_ms) {
            if f >= u {
                return Err("The from date is after the to date.".into());
            }
        }
        Ok(AuditQuery {
            actor: text(&self.actor, "actor", MAX_ACTOR)?,
            action,
            target: text(&self.target, "target", MAX_TARGET)?,
            from_ms,
            until_ms,
        })
    }

    /// `actor=…&action=…` with the non-empty fields, percent-encoded; empty
    /// when nothing is filtered.
    pub fn query_string(&self) -> String {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The CSV export's columns.
pub const CSV_HEADER: [&str; 9] = [
    "seq",
    "time",
    "actor",
    "action",
    "target",
    "addr",
    "detail",
    "prev_hash",
    "hash",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed<'a>(seq: i64, prev: &'a str) -> Sealed<'a> {
        Sealed {
            seq,
            at_ms: 1000 + seq,
            actor: "ada",
            action: "sign_in",
            target: "user:ada",
            addr: "127.0.0.1",
            detail: "",
            prev_hash: prev,
        }
    }

    /// A stand-in hash for the chain tests: any injective function will do.
    fn h(s: &Sealed<'_>) -> String {
        format!("h({})", hash_input(s))
    }

    #[test]
    fn actions_round_trip_and_are_snake_case() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert!(a
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(Action::parse("drop_table"), None);
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }

    #[test]
    fn hash_input_is_a_json_array_no_field_can_forge() {
        let a = hash_input(&Sealed {
            actor: "a\",\"b",
            ..sealed(1, GENESIS_HASH)
        });
        let b = hash_input(&Sealed {
            actor: "a",
            target: "b\",\"user:ada",
            ..sealed(1, GENESIS_HASH)
        });
        assert_ne!(a, b);
        let parsed: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(parsed[2], "a\",\"b");
        assert_eq!(parsed[7], GENESIS_HASH);
    }

    #[test]
    fn entries_are_bounded() {
        let e = Entry::new("x".repeat(10_000), Action::SignInFailed, "é".repeat(5000))
            .addr("1".repeat(500))
            .detail("d".repeat(100_000))
            .bounded();
        assert_eq!(e.actor.chars().count(), MAX_ACTOR);
        assert_eq!(e.target.chars().count(), MAX_TARGET);
        assert!(e.target.ends_with('…'));
        assert_eq!(e.addr.chars().count(), MAX_ADDR);
        assert_eq!(e.detail.chars().count(), MAX_DETAIL);
        assert_eq!(truncate("short", 10), "short");
    }

    /// Builds a good chain of `n` entries as (entry fields, stored hash).
    fn chain(n: i64) -> Vec<(i64, String, String)> {
        let mut out = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=n {
            let hash = h(&sealed(seq, &prev));
            out.push((seq, prev.clone(), hash.clone()));
            prev = hash;
        }
        out
    }

    fn walk(rows: &[(i64, String, String)]) -> Result<ChainCheck, Break> {
        let mut c = ChainCheck::default();
        for (seq, prev, stored) in rows {
            let s = sealed(*seq, prev);
            c.check(&s, stored, &h(&s))?;
        }
        Ok(c)
    }

    #[test]
    fn an_intact_chain_verifies_with_its_head() {
        let rows = chain(5);
        let c = walk(&rows).unwrap();
        assert_eq!(c.finish(5, &rows[4].2), Ok(5));
        assert_eq!(ChainCheck::default().finish(0, GENESIS_HASH), Ok(0));
    }

    #[test]
    fn every_kind_of_break_is_named() {
        let rows = chain(5);
        // Edited contents: the stored hash no longer matches.
        let mut edited = rows.clone();
        edited[2].2 = "forged".into();
        let e = walk(&edited).unwrap_err();
        assert_eq!(e, Break::Edited { seq: 3 });
        assert_eq!(
            e.to_string(),
            "entry 3: its hash does not match its contents (edited?)"
        );
        // A middle entry deleted.
        let mut gap = rows.clone();
        gap.remove(2);
        let e = walk(&gap).unwrap_err();
        assert_eq!(e.to_string(), "entry 4 follows entry 2: entry 3 is missing");
        let mut gap2 = rows.clone();
        gap2.drain(1..3);
        assert_eq!(
            walk(&gap2).unwrap_err().to_string(),
            "entry 4 follows entry 1: entries 2 to 3 are missing"
        );
        // The first deleted.
        assert_eq!(
            walk(&rows[1..]).unwrap_err().to_string(),
            "entry 2 is the first entry: entry 1 is missing"
        );
        // An entry rehashed after editing: the next one's link breaks.
        let mut relinked = rows.clone();
        relinked[3].1 = "other".into();
        relinked[3].2 = h(&sealed(4, "other"));
        assert_eq!(walk(&relinked).unwrap_err(), Break::Relinked { seq: 4 });
        // The tail cut off, or the head changed.
        let c = walk(&rows[..3]).unwrap();
        let t = c.finish(5, &rows[4].2).unwrap_err();
        assert_eq!(t, Break::Truncated { head: 5, last: 3 });
        assert!(t.to_string().contains("entries 4 to 5 are missing"), "{t}");
        assert_eq!(
            c.finish(2, &rows[1].2),
            Err(Break::BeyondHead { head: 2, last: 3 })
        );
        assert_eq!(c.finish(3, "x"), Err(Break::HeadMismatch { seq: 3 }));
    }

    #[test]
    fn config_diffs_name_entries_and_stay_short() {
        let old: BTreeMap<String, String> =
            [("clients.acme", "1"), ("models.a", "1"), ("server", "s")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let mut new = old.clone();
        new.insert("clients.acme".into(), "2".into());
        new.insert("models.gpt".into(), "1".into());
        new.remove("models.a");
        let d = config_diff(&old, &new);
        assert_eq!(
            reload_detail(4, &d),
            "generation 4: clients.acme changed; models.gpt added; models.a removed"
        );
        assert_eq!(reload_detail(4, &[]), "generation 4: no entries changed");
        let many: Vec<(String, Change)> = (0..10_000)
            .map(|i| (format!("clients.c{i}"), Change::Added))
            .collect();
        let text = reload_detail(9, &many);
        assert!(text.len() < 600, "{}", text.len());
        assert!(text.ends_with("more"), "{text}");
        assert!(text.starts_with("generation 9: clients.c0 added; "));
        assert_eq!(
            reload_failed_detail(3, "tollgate.yaml:4: bad\nmore lines"),
            "generation 3 stays in force: tollgate.yaml:4: bad"
        );
    }

    #[test]
    fn config_entries_cover_every_section() {
        let c = Config::default();
        let e = config_entries(&c);
        assert!(e.contains_key("server"));
        assert!(e.contains_key("clients.default"));
        assert!(e.contains_key("users.default"));
    }

    #[test]
    fn filters_parse_and_refuse() {
        let f = AuditFilter {
            actor: " ada ".into(),
            action: "sign_in".into(),
            target: "".into(),
            from: "2026-11-29".into(),
            to: "2026-11-29".into(),
        };
        let q = f.query().unwrap();
        assert_eq!(q.actor.as_deref(), Some("ada"));
        assert_eq!(q.action, Some(Action::SignIn));
        assert_eq!(q.target, None);
        assert_eq!(
            q.until_ms.unwrap() - q.from_ms.unwrap(),
            super::super::time::DAY_MS
        );
        assert_eq!(
            super::super::time::rfc3339(q.from_ms.unwrap()),
            "2026-11-29T00:00:00.000Z"
        );
        for bad in [
            AuditFilter {
                action: "nope".into(),
                ..Default::default()
            },
            AuditFilter {
                from: "2026-02-30".into(),
                ..Default::default()
            },
            AuditFilter {
                from: "29.11.2026".into(),
                ..Default::default()
            },
            AuditFilter {
                to: "-2026-01-01".into(),
                ..Default::default()
            },
            AuditFilter {
                from: "2026-12-02".into(),
                to: "2026-12-01".into(),
                ..Default::default()
            },
            AuditFilter {
                actor: "a".repeat(MAX_ACTOR + 1),
                ..Default::default()
            },
        ] {
            assert!(bad.query().is_err(), "{bad:?}");
        }
        assert_eq!(
            AuditFilter {
                actor: "a b&c".into(),
                action: "sign_in".into(),
                ..Default::default()
            }
            .query_string(),
            "actor=a%20b%26c&action=sign_in"
        );
    }
}
