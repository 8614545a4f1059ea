//! Reading `tollgate.yaml`. Every error names the file, line, column and the
//! field path, e.g. `tollgate.yaml:7:16: clients.research-bot.model_access.default: …`.

use super::{sha256_hex, LoadedConfig};
use crate::domain::config::RawConfig;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted field path, empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Strips what our own error line already says: serde_norway appends
/// " at line L column C" and may prefix the path.
fn clean_message(raw: &str, path: &str) -> String {
    let mut msg = raw.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    if !path.is_empty() {
        if let Some(rest) = msg.strip_prefix(&format!("{path}: ")) {
            msg = rest.to_string();
        }
    }
    msg
}

/// Parses and validates config text. `file` is used in error messages only.
pub fn parse(file: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
    let err = |line, column, path: String, message: String| ConfigError {
        file: file.to_string(),
        line,
        column,
        path,
        message,
    };
    if text.trim().is_empty() {
        return Err(err(Some(1), Some(1), String::new(), "the file is empty".into()));
    }
    let de = serde_norway::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let (line, column) = match inner.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        let message = clean_message(&inner.to_string(), &path);
        err(line, column, path, message)
    })?;
    let (config, warnings) = raw.into_config();
    Ok(LoadedConfig { config, warnings, content_hash: sha256_hex(text.as_bytes()) })
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        column: None,
        path: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(&file, &text)
}
