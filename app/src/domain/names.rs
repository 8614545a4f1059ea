//! Names of clients and users. They double as YAML keys under `clients:` and
//! `users:`, so they use the characters a plain YAML key can hold unquoted.

pub const MAX_NAME_LEN: usize = 64;

/// Checks a client or user name: 1-64 characters of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("a name is at most {MAX_NAME_LEN} characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("`{name}` must start with a letter or a digit"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}` contains `{bad}`; use only letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// `default` is the name of the defaults entry and cannot name a client or user.
pub fn validate_owner_name(name: &str) -> Result<(), String> {
    validate_name(name)?;
    if name == "default" {
        return Err("`default` is reserved for the defaults entry".into());
    }
    Ok(())
}

/// The longest key label, in characters.
pub const MAX_LABEL_LEN: usize = 100;

/// Characters that reorder the text around them when displayed, so that a
/// label could show something other than what it holds.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Checks a free-text label (of an API key): at most 100 characters, and no
/// control or bidirectional-control characters.
pub fn validate_label(label: &str) -> Result<(), String> {
    if label.chars().count() > MAX_LABEL_LEN {
        return Err(format!("a label is at most {MAX_LABEL_LEN} characters"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| c.is_control() || is_bidi_control(*c))
    {
        return Err(format!(
            "a label cannot contain the control character U+{:04X}",
            bad as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["", "nightly job", "Ünïcödé 🚀", &"x".repeat(100)] {
            assert!(validate_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "x".repeat(101),
            "evil\u{202E}gnp.exe".into(),
            "a\u{2066}b".into(),
            "a\u{200F}".into(),
            "\u{061C}".into(),
            "tab\there".into(),
        ] {
            assert!(validate_label(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        for ok in ["research-bot", "a", "app_1.prod", "9lives"] {
            assert!(validate_owner_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "has space",
            "é",
            "default",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(validate_owner_name(bad).is_err(), "{bad}");
        }
    }
}
