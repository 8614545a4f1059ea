//! Model access: which models an owner may call, and which rule decided.
//!
//! Order of precedence: blacklist, then whitelist, then graylist (allowed only
//! with a recorded consent), then the `default` mode for unlisted models.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    Whitelist,
    Blacklist,
    Graylist,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Whitelist => "whitelist",
            AccessMode::Blacklist => "blacklist",
            AccessMode::Graylist => "graylist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessMode> {
        match s {
            "whitelist" => Some(AccessMode::Whitelist),
            "blacklist" => Some(AccessMode::Blacklist),
            "graylist" => Some(AccessMode::Graylist),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    pub default: AccessMode,
    pub whitelist: BTreeSet<String>,
    pub blacklist: BTreeSet<String>,
    pub graylist: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Allowed,
    Denied,
    ConsentRequired,
}

/// The rule that decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    Blacklist,
    Whitelist,
    Graylist,
    Default(AccessMode),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Blacklist => f.write_str("listed in model_access.blacklist"),
            Rule::Whitelist => f.write_str("listed in model_access.whitelist"),
            Rule::Graylist => f.write_str("listed in model_access.graylist"),
            Rule::Default(m) => write!(f, "not listed; model_access.default is {}", m.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Rule,
}

impl AccessPolicy {
    /// No model is allowed: what an entry without `model_access` means.
    pub fn deny_all() -> Self {
        AccessPolicy {
            default: AccessMode::Blacklist,
            whitelist: BTreeSet::new(),
            blacklist: BTreeSet::new(),
            graylist: BTreeSet::new(),
        }
    }

    /// Decides access to `model`; `consented` says whether a consent for it is
    /// on record for this owner.
    pub fn decide(&self, model: &str, consented: bool) -> Decision {
        let by_mode = |mode: AccessMode| match mode {
            AccessMode::Whitelist => Verdict::Allowed,
            AccessMode::Blacklist => Verdict::Denied,
            AccessMode::Graylist if consented => Verdict::Allowed,
            AccessMode::Graylist => Verdict::ConsentRequired,
        };
        let (verdict, rule) = if self.blacklist.contains(model) {
            (Verdict::Denied, Rule::Blacklist)
        } else if self.whitelist.contains(model) {
            (Verdict::Allowed, Rule::Whitelist)
        } else if self.graylist.contains(model) {
            (by_mode(AccessMode::Graylist), Rule::Graylist)
        } else {
            (by_mode(self.default), Rule::Default(self.default))
        };
        Decision { verdict, rule }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessMode::*;
    use Verdict::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn policy(default: AccessMode, w: &[&str], b: &[&str], g: &[&str]) -> AccessPolicy {
        AccessPolicy {
            default,
            whitelist: set(w),
            blacklist: set(b),
            graylist: set(g),
        }
    }

    #[test]
    fn every_mode_and_list_combination() {
        // (default, in whitelist, in blacklist, in graylist, consented) -> (verdict, rule)
        let modes = [Whitelist, Blacklist, Graylist];
        for default in modes {
            for in_w in [false, true] {
                for in_b in [false, true] {
                    for in_g in [false, true] {
                        for consented in [false, true] {
                            let m = "m";
                            let pick = |on: bool| -> &[&str] {
                                if on {
                                    &["m"]
                                } else {
                                    &[]
                                }
                            };
                            let p = policy(default, pick(in_w), pick(in_b), pick(in_g));
                            let d = p.decide(m, consented);
                            let expected = if in_b {
                                (Denied, Rule::Blacklist)
                            } else if in_w {
                                (Allowed, Rule::Whitelist)
                            } else if in_g {
                                (
                                    if consented { Allowed } else { ConsentRequired },
                                    Rule::Graylist,
                                )
                            } else {
                                let v = match default {
                                    Whitelist => Allowed,
                                    Blacklist => Denied,
                                    Graylist if consented => Allowed,
                                    Graylist => ConsentRequired,
                                };
                                (v, Rule::Default(default))
                            };
                            assert_eq!(
                                (d.verdict, d.rule),
                                expected,
                                "{default:?} w={in_w} b={in_b} g={in_g} c={consented}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn explicit_table() {
        let rows: &[(AccessPolicy, &str, bool, Verdict, Rule)] = &[
            (
                policy(Blacklist, &["dummy"], &[], &[]),
                "dummy",
                false,
                Allowed,
                Rule::Whitelist,
            ),
            (
                policy(Blacklist, &["dummy"], &[], &[]),
                "gpt-4o",
                false,
                Denied,
                Rule::Default(Blacklist),
            ),
            (
                policy(Whitelist, &[], &["gpt-4o"], &[]),
                "gpt-4o",
                true,
                Denied,
                Rule::Blacklist,
            ),
            (
                policy(Whitelist, &[], &[], &[]),
                "anything",
                false,
                Allowed,
                Rule::Default(Whitelist),
            ),
            (
                policy(Blacklist, &["x"], &["x"], &[]),
                "x",
                false,
                Denied,
                Rule::Blacklist,
            ),
            (
                policy(Blacklist, &["x"], &[], &["x"]),
                "x",
                false,
                Allowed,
                Rule::Whitelist,
            ),
            (
                policy(Blacklist, &[], &[], &["x"]),
                "x",
                false,
                ConsentRequired,
                Rule::Graylist,
            ),
            (
                policy(Blacklist, &[], &[], &["x"]),
                "x",
                true,
                Allowed,
                Rule::Graylist,
            ),
            (
                policy(Graylist, &[], &[], &[]),
                "y",
                false,
                ConsentRequired,
                Rule::Default(Graylist),
            ),
            (
                policy(Graylist, &[], &["y"], &[]),
                "y",
                true,
                Denied,
                Rule::Blacklist,
            ),
            (
                AccessPolicy::deny_all(),
                "dummy",
                true,
                Denied,
                Rule::Default(Blacklist),
            ),
        ];
        for (p, model, consented, verdict, rule) in rows {
            let d = p.decide(model, *consented);
            assert_eq!((d.verdict, d.rule), (*verdict, *rule), "{p:?} {model}");
        }
    }

    #[test]
    fn rules_explain_themselves() {
        assert_eq!(
            Rule::Default(Blacklist).to_string(),
            "not listed; model_access.default is blacklist"
        );
        assert_eq!(
            Rule::Graylist.to_string(),
            "listed in model_access.graylist"
        );
    }
}
