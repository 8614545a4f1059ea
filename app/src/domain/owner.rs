//! Who owns pools and keys, and who may do what in the console. Plain types
//! shared with the browser: the wire and database form is the lowercase name.

use serde::{Deserialize, Serialize};

/// What a pool, key, policy or consent belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    Client,
    User,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Client => "client",
            OwnerKind::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<OwnerKind> {
        match s {
            "client" => Some(OwnerKind::Client),
            "user" => Some(OwnerKind::User),
            _ => None,
        }
    }
}

/// A console user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Manager,
    User,
}

impl Role {
    /// Every role, least privileged first (the order the console lists them).
    pub const ALL: [Role; 3] = [Role::User, Role::Manager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "user" => Some(Role::User),
            _ => None,
        }
    }

    /// Whether this role sees the clients list (admins all, managers theirs).
    pub fn manages_clients(self) -> bool {
        self != Role::User
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for k in [OwnerKind::Client, OwnerKind::User] {
            assert_eq!(OwnerKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(OwnerKind::parse(""), None);
    }
}
