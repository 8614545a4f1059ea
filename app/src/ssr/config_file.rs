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
    /// Errors in other entries of the same file, found after this one.
    pub also: Box<[ConfigError]>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_one(f)?;
        for e in &self.also {
            writeln!(f)?;
            e.fmt_one(f)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error about the file as a whole: no position, no field.
    pub fn whole_file(file: &str, message: String) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message,
            also: Box::default(),
        }
    }

    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// At most this many errors are reported for one file.
const MAX_ERRORS: usize = 20;

/// Parses and validates config text. `file` is used in error messages only.
///
/// Every entry of `models`, `clients` and `users` that has an error is
/// reported, one error per entry: after an error inside an entry, that
/// entry's lines are blanked (so later positions still match the file) and
/// the text is read again. Other errors (syntax, top-level fields) stop at
/// the first.
pub fn parse(file: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
    let mut current = std::borrow::Cow::Borrowed(text);
    let mut found: Vec<ConfigError> = Vec::new();
    loop {
        let e = match parse_once(file, &current) {
            Ok(loaded) if found.is_empty() => return Ok(loaded),
            Ok(_) => break,
            Err(e) => e,
        };
        let Some(((blanked, lines), key_line, key_column)) = blank_entry(&current, &e) else {
            found.push(e);
            break;
        };
        // serde reports some entry-wide errors (a missing field in a flow
        // mapping) at the start of the section; point at the entry instead.
        let inside = e
            .line
            .is_some_and(|l| l >= key_line && l < key_line + lines);
        found.push(if inside {
            e
        } else {
            ConfigError {
                line: Some(key_line),
                column: Some(key_column),
                ..e
            }
        });
        if found.len() >= MAX_ERRORS {
            break;
        }
        current = std::borrow::Cow::Owned(blanked);
    }
    let mut all = found.into_iter();
    let mut first = all
        .next()
        .unwrap_or_else(|| ConfigError::whole_file(file, "the file is invalid".into()));
    first.also = all.collect();
    Err(first)
}

/// The text with the block-style entry that `e` points into replaced by
/// empty lines, and how many lines that entry has, with the line and column
/// of its key; `None` if `e` is not inside such an entry.
fn blank_entry(text: &str, e: &ConfigError) -> Option<((String, usize), usize, usize)> {
    let (section, rest) = e.path.split_once('.')?;
    if !matches!(section, "models" | "clients" | "users") {
        return None;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let head = lines.iter().position(|l| {
        indent(l) == 0 && l.split(" #").next().unwrap_or(l).trim_end() == format!("{section}:")
    })?;
    let end = (head + 1..lines.len())
        .find(|&i| content(lines[i]) && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    let entry_indent = (head + 1..end)
        .find(|&i| content(lines[i]))
        .map(|i| indent(lines[i]))?;
    // Entry keys at the entry indentation, with where each one ends.
    let mut entries: Vec<(String, usize, usize)> = Vec::new();
    for i in head + 1..end {
        let l = lines[i];
        if !content(l) || indent(l) > entry_indent {
            continue;
        }
        let key = l
            .trim()
            .split(':')
            .next()?
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        let stop = (i + 1..end)
            .find(|&j| content(lines[j]) && indent(lines[j]) <= entry_indent)
            .unwrap_or(end);
        entries.push((key.to_string(), i, stop));
    }
    let named = |k: &str| rest == k || rest.starts_with(&format!("{k}."));
    let at_error = |from: usize, to: usize| e.line.is_some_and(|l| (from + 1..=to).contains(&l));
    let (_, from, to) = entries
        .iter()
        .filter(|(k, _, _)| named(k))
        .max_by_key(|(k, from, to)| (at_error(*from, *to), k.len()))?
        .clone();
    let mut out: Vec<&str> = lines.clone();
    for line in out.iter_mut().take(to).skip(from) {
        *line = "";
    }
    Some(((out.join("\n"), to - from), from + 1, entry_indent + 1))
}

impl std::error::Error for ConfigError {}

/// The line (1-based) of the deepest key of a dotted `path` that the text
/// spells out in block style: for a field that is missing or inside a flow
/// mapping, the line of the entry that holds it. Keys may contain dots, so
/// each level takes the longest key that starts the rest of the path.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.split('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let key = |l: &str| {
        let k = l.trim().split(':').next().unwrap_or("").trim();
        k.trim_matches(|c| c == '"' || c == '\'').to_string()
    };
    let (mut rest, mut from, mut to, mut found) = (path, 0, lines.len(), None);
    while !rest.is_empty() {
        let Some(level) = (from..to)
            .find(|&i| content(lines[i]))
            .map(|i| indent(lines[i]))
        else {
            break;
        };
        let hit = (from..to)
            .filter(|&i| content(lines[i]) && indent(lines[i]) == level)
            .map(|i| (i, key(lines[i])))
            .filter(|(_, k)| rest == k || rest.starts_with(&format!("{k}.")))
            .max_by_key(|(_, k)| k.len());
        let Some((i, k)) = hit else { break };
        found = Some(i + 1);
        rest = rest[k.len()..].trim_start_matches('.');
        to = (i + 1..to)
            .find(|&j| content(lines[j]) && indent(lines[j]) <= level)
            .unwrap_or(to);
        from = i + 1;
    }
    found
}

/// Strips what our own error line already says: serde_norway appends
/// " at line L column C" and may prefix the path.
fn clean_message(raw: &str, path: &str) -> String {
    let mut msg = raw.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    // serde_norway may prefix its own (possibly shorter) path.
    if let Some((head, rest)) = msg.split_once(": ") {
        let looks_like_path = !head.is_empty() && !head.contains(' ');
        if looks_like_path && (path.starts_with(head) || head == ".") {
            msg = rest.to_string();
        }
    }
    msg
}

fn parse_once(file: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
    let err = |line, column, path: String, message: String| ConfigError {
        file: file.to_string(),
        line,
        column,
        path,
        message,
        also: Box::default(),
    };
    if text.trim().is_empty() {
        return Err(err(
            Some(1),
            Some(1),
            String::new(),
            "the file is empty".into(),
        ));
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
    let (config, mut warnings) = raw.into_config();
    for w in &mut warnings {
        w.line = line_of(text, &w.path);
    }
    check_oidc_secret(&config).map_err(|(path, message)| {
        let line = line_of(text, &path);
        let column = line
            .and_then(|l| text.split('\n').nth(l - 1))
            .map(|l| l.len() - l.trim_start().len() + 1);
        err(line, column, path, message)
    })?;
    Ok(LoadedConfig {
        config,
        warnings,
        content_hash: sha256_hex(text.as_bytes()),
    })
}

/// The client secret of `auth.oidc` comes from the environment variable the
/// file names; a file naming an unset one is refused, so a reload cannot
/// switch single sign-on to a secret the process does not have.
fn check_oidc_secret(config: &crate::domain::config::Config) -> Result<(), (String, String)> {
    let Some(oidc) = &config.auth.oidc else {
        return Ok(());
    };
    let var = oidc.client_secret_env.as_str();
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(()),
        _ => Err((
            "auth.oidc.client_secret_env".into(),
            format!("the environment variable `{var}` is not set (or empty); it must hold the client secret"),
        )),
    }
}

/// The largest config file read; anything bigger is a mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a config file without ever blocking on it: the path is opened
/// non-blocking (a FIFO put in its place would otherwise hang the reader
/// until something writes to it) and must turn out to be a regular file of
/// at most [`MAX_CONFIG_BYTES`].
pub fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device?)"
        };
        return Err(std::io::Error::other(format!("the config path is {what}")));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "the config file is {} bytes; at most {MAX_CONFIG_BYTES} are read",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(
            "the config file grew past the size limit while it was read",
        ));
    }
    Ok(bytes)
}

/// Parses config bytes read from `file`.
pub fn parse_bytes(file: &str, bytes: Vec<u8>) -> Result<LoadedConfig, ConfigError> {
    match String::from_utf8(bytes) {
        Ok(text) => parse(file, &text),
        Err(_) => Err(ConfigError::whole_file(
            file,
            "the file is not UTF-8 text".into(),
        )),
    }
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path)
        .map_err(|e| ConfigError::whole_file(&file, format!("cannot read the config file: {e}")))?;
    parse_bytes(&file, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{PoolLimit, SettingsSource};
    use crate::domain::money::MICRO;
    use crate::domain::policy::{AccessMode, Decision, Rule, Verdict};
    use crate::domain::pricing::Price;

    /// The user's first example (configuring-clients.md, "Global Defaults").
    const SEED_DEFAULTS: &str = "\
clients:
  default:
    max: 100.0        # coin budget (-2 = unlimited, 0 = blocked)
    refresh: 0.05     # coins added per hour
    starting: 100.0   # coins when pool is first created
    model_access:
      default: blacklist   # deny everything not explicitly listed
      blacklist: []        # always-deny list
      whitelist: [dummy]   # always-allow list
";

    /// The user's second example ("Per-Client Overrides").
    const SEED_OVERRIDES: &str = "\
clients:
  default:
    max: 100.0
    refresh: 0.05
    starting: 100.0
    model_access:
      default: blacklist
  research-bot:
    max: 500.0
    refresh: 1.0
    starting: 500.0
    model_access:
      default: whitelist
      whitelist: [gpt-4o, llama3, qwen3.5-9b-q5]
";

    fn ok(text: &str) -> LoadedConfig {
        parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> ConfigError {
        parse("t.yaml", text).expect_err("should be rejected")
    }

    fn verdict(d: Decision) -> (Verdict, Rule) {
        (d.verdict, d.rule)
    }

    #[test]
    fn media_and_pass_through_are_checked_and_documented() {
        let l = ok("models:\n  v:\n    provider: dummy\n    price: { input: 1, output: 1 }\n    media: { image: 1500 }\n    pass_through: [service_tier]\n");
        let m = &l.config.models["v"];
        assert_eq!((m.media.image, m.media.audio), (Some(1500), None));
        assert!(m.pass_through.contains("service_tier"));
        assert!(
            l.warnings.iter().any(|w| w.path == "models.v.pass_through"
                && w.message.contains("cannot bound what it costs")),
            "{:?}",
            l.warnings
        );
        // A half-written or hostile entry names its field and line.
        let e = err("models:\n  v:\n    provider: dummy\n    price: { input: 1, output: 1 }\n    pass_through: [\"\"]\n");
        assert!(e.to_string().contains("pass_through entry"), "{e}");
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(5), "models.v.pass_through[0]"),
            "{e}"
        );
        let e = err("models:\n  v:\n    provider: dummy\n    price: { input: 1, output: 1 }\n    media: { video: 9 }\n");
        assert!(e.to_string().contains("unknown field `video`"), "{e}");
        let e = err("models:\n  v:\n    provider: dummy\n    price: { input: 1, output: 1 }\n    media: { image: -1 }\n");
        assert!(e.path.contains("media.image"), "{e}");
    }

    #[test]
    fn seed_global_defaults_give_the_documented_settings() {
        let c = ok(SEED_DEFAULTS).config;
        let (s, source) = c.clients.settings_for("any-client");
        assert_eq!(source, SettingsSource::Default);
        assert_eq!(s.pool.limit, PoolLimit::Limited(100 * MICRO));
        assert_eq!(s.pool.refresh_micro, 50_000);
        assert_eq!(s.pool.starting_micro, 100 * MICRO);
        assert_eq!(s.access.default, AccessMode::Blacklist);
        assert_eq!(
            verdict(s.access.decide("dummy", false)),
            (Verdict::Allowed, Rule::Whitelist)
        );
        assert_eq!(
            verdict(s.access.decide("gpt-4o", false)),
            (Verdict::Denied, Rule::Default(AccessMode::Blacklist))
        );
    }

    #[test]
    fn seed_overrides_give_the_documented_settings() {
        let c = ok(SEED_OVERRIDES).config;
        let (bot, source) = c.clients.settings_for("research-bot");
        assert_eq!(source, SettingsSource::Named);
        assert_eq!(bot.pool.limit, PoolLimit::Limited(500 * MICRO));
        assert_eq!(bot.pool.refresh_micro, MICRO);
        assert_eq!(bot.pool.starting_micro, 500 * MICRO);
        for m in ["gpt-4o", "llama3", "qwen3.5-9b-q5"] {
            assert_eq!(
                verdict(bot.access.decide(m, false)),
                (Verdict::Allowed, Rule::Whitelist),
                "{m}"
            );
        }
        // default: whitelist, so unlisted models are allowed too.
        assert_eq!(
            verdict(bot.access.decide("dummy", false)),
            (Verdict::Allowed, Rule::Default(AccessMode::Whitelist))
        );

        let (other, source) = c.clients.settings_for("other");
        assert_eq!(source, SettingsSource::Default);
        assert_eq!(other.pool.limit, PoolLimit::Limited(100 * MICRO));
        // The defaults here have no whitelist: every model is denied.
        assert_eq!(
            verdict(other.access.decide("dummy", false)),
            (Verdict::Denied, Rule::Default(AccessMode::Blacklist))
        );
    }

    #[test]
    fn named_entries_inherit_nothing() {
        let c = ok("\
clients:
  default:
    max: 100
    refresh: 5
    starting: 100
    model_access: { default: whitelist, whitelist: [dummy] }
  bare: {}
  only-max:
    max: 7
  access-without-default:
    max: 1
    model_access:
      whitelist: [dummy]
  nulled:
")
        .config;
        let (bare, _) = c.clients.settings_for("bare");
        assert_eq!(
            bare.pool.limit,
            PoolLimit::Limited(0),
            "no max means blocked"
        );
        assert_eq!(bare.pool.refresh_micro, 0);
        assert_eq!(bare.pool.starting_micro, 0);
        assert_eq!(
            bare.access.decide("dummy", false).verdict,
            Verdict::Denied,
            "no model_access denies everything"
        );
        let (only_max, _) = c.clients.settings_for("only-max");
        assert_eq!(only_max.pool.limit, PoolLimit::Limited(7 * MICRO));
        assert_eq!(only_max.pool.refresh_micro, 0, "refresh is not inherited");
        assert_eq!(only_max.pool.starting_micro, 0, "starting is not inherited");
        assert_eq!(
            only_max.access.decide("dummy", false).verdict,
            Verdict::Denied,
            "model_access is not inherited"
        );
        let (no_default, _) = c.clients.settings_for("access-without-default");
        assert_eq!(
            no_default.access.decide("dummy", false).verdict,
            Verdict::Allowed
        );
        assert_eq!(
            verdict(no_default.access.decide("other", false)),
            (Verdict::Denied, Rule::Default(AccessMode::Blacklist))
        );
        let (nulled, _) = c.clients.settings_for("nulled");
        assert_eq!(nulled.pool.limit, PoolLimit::Limited(0));
    }

    #[test]
    fn unlimited_blocked_and_catalog() {
        let c = ok("\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
  gpt-4o:
    provider: openai
    base_url: https://api.openai.com/v1/
    api_key_env: OPENAI_API_KEY
    upstream_model: gpt-4o
    price: { input: 2.5, output: 10, request: 0.01 }
    max_output_tokens: 4096
    consent_notice: Prompts leave the organisation.
users:
  default: { max: -2 }
  blocked: { max: 0 }
")
        .config;
        assert_eq!(c.users.default.pool.limit, PoolLimit::Unlimited);
        assert!(c.users.named["blocked"].pool.limit.is_blocked());
        let gpt = &c.models["gpt-4o"];
        assert_eq!(gpt.price.input_micro, 2_500_000);
        assert_eq!(gpt.price.request_micro, 10_000);
        assert_eq!(gpt.max_output_tokens, Some(4096));
        match gpt.provider() {
            crate::domain::config::Provider::OpenAi { base_url, .. } => {
                assert_eq!(base_url, "https://api.openai.com/v1")
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn cache_prices_default_to_the_input_price() {
        let c = ok("\
models:
  plain: { provider: dummy, price: { input: 2.5, output: 10 } }
  cached:
    provider: dummy
    price: { input: 3, output: 15, request: 0.002, cached_input: 0.3, cache_write: 3.75 }
  free-cache: { provider: dummy, price: { input: 1, output: 1, cached_input: 0 } }
")
        .config;
        let p = c.models["plain"].price;
        assert_eq!(
            (p.input_micro, p.cached_input_micro, p.cache_write_micro),
            (2_500_000, 2_500_000, 2_500_000)
        );
        assert_eq!((p.output_micro, p.request_micro), (10_000_000, 0));
        assert_eq!(
            c.models["cached"].price,
            Price {
                input_micro: 3_000_000,
                output_micro: 15_000_000,
                request_micro: 2_000,
                cached_input_micro: 300_000,
                cache_write_micro: 3_750_000,
            }
        );
        let p = c.models["free-cache"].price;
        assert_eq!((p.cached_input_micro, p.cache_write_micro), (0, 1_000_000));

        let e = err("models:\n  m:\n    provider: dummy\n    price: { input: 1, output: 1, cached_input: -1 }\n");
        assert!(e.path.contains("price.cached_input"), "{e}");
        let e = err("models:\n  m:\n    provider: dummy\n    price: { input: 1, output: 1, cache_read: 1 }\n");
        assert!(e.message.contains("cache_read"), "{e}");
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let e = err(
            "clients:\n  research-bot:\n    max: 5\n    model_access:\n      default: sometimes\n",
        );
        assert_eq!(e.path, "clients.research-bot.model_access.default");
        assert_eq!((e.line, e.column), (Some(5), Some(16)));
        assert!(e.message.contains("sometimes"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.yaml:5:16: clients.research-bot.model_access.default: "),
            "{e}"
        );

        let e = err("clients:\n  default:\n    max: -1\n");
        assert_eq!(e.path, "clients.default.max");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("max must be ≥ 0 or exactly -2"), "{e}");

        let e = err("clients:\n  default:\n    refresh: -0.5\n");
        assert_eq!(e.path, "clients.default.refresh");
        let e = err("users:\n  default:\n    starting: -1\n");
        assert_eq!(e.path, "users.default.starting");

        let e = err("clients:\n  default:\n    maximum: 5\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown field `maximum`"), "{e}");
        assert!(e.path.starts_with("clients.default"), "{e}");

        let e = err("clients:\n  default:\n    max: [1\n");
        assert!(e.line.is_some(), "syntax errors carry a position: {e}");

        let e = err("models:\n  gpt:\n    provider: openai\n    price: { input: 1, output: 1 }\n");
        assert_eq!(e.path, "models.gpt");
        assert!(e.message.contains("base_url"), "{e}");
        assert!(e.line.is_some(), "{e}");

        let e = err("nonsense: 1\n");
        assert!(e.message.contains("unknown field `nonsense`"), "{e}");
        let e = err("clients:\n  \"bad name\": {}\n");
        assert!(e.message.contains("bad name"), "{e}");
        assert!(err("   \n").message.contains("empty"));

        // A name given twice is refused, not silently replaced.
        let e = err("clients:\n  default:\n    max: 1\n  bot:\n    max: 2\n  bot:\n    max: 3\n");
        assert!(e.message.contains("`bot` appears twice"), "{e}");
        assert_eq!(e.path, "clients.bot", "{e}");
        assert!(e.line.is_some_and(|l| l >= 6), "{e}");
        let e = err("clients:\n  default:\n    max: 1\n    max: 2\n");
        assert!(e.message.contains("duplicate field `max`"), "{e}");
        assert!(ok("clients:\n").config.clients.named.is_empty());
    }

    #[test]
    fn every_entry_with_an_error_is_reported() {
        let text = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
  gpt: { provider: openai, price: { input: 1, output: 1 } }
clients:
  default:   # the defaults
    max: 1
  bot:
    max: -1
    model_access:
      default: sometimes
  ok-one:
    max: 5

  app.prod:
    refresh: -3
users:
  default: { max: 1, nonsense: 2 }
";
        let e = err(text);
        let all: Vec<(String, Option<usize>)> = std::iter::once(&e)
            .chain(&e.also)
            .map(|e| (e.path.clone(), e.line))
            .collect();
        assert_eq!(
            all,
            vec![
                ("models.gpt".to_string(), Some(3)),
                ("clients.bot.max".to_string(), Some(8)),
                ("clients.app.prod.refresh".to_string(), Some(15)),
                ("users.default.nonsense".to_string(), Some(17)),
            ],
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 4, "{e}");
        // An error outside the entries stops at the first.
        let e = err("nonsense: 1\nclients:\n  x: {max: -1}\n");
        assert!(e.message.contains("nonsense") && e.also.is_empty(), "{e}");
    }

    #[test]
    fn warnings_do_not_stop_loading() {
        let l = ok("\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 1
    model_access: { whitelist: [dummy, ghost], blacklist: [dummy] }
");
        let text: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            text.iter()
                .any(|w| w.contains("`dummy` is in both whitelist and blacklist")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|w| w.contains("clients.default.model_access.whitelist")
                    && w.contains("`ghost` is not in the `models` catalog")),
            "{text:?}"
        );
        assert_eq!(l.warnings.len(), 2, "{text:?}");
    }

    #[test]
    fn rate_limits_are_read_and_omitted_means_unlimited() {
        use crate::domain::rate::RateLimits;
        let l = ok("\
clients:
  default:
    rate_limits: { requests_per_minute: 60, tokens_per_minute: 100000 }
  bot:
    max: 1
    rate_limits:
      tokens_per_minute: 500
  app.v2: { max: 1, rate_limits: {} }
  free:
    max: 1
users:
  default:
    max: 1
");
        let c = &l.config;
        assert_eq!(
            c.clients.default.rate_limits,
            RateLimits {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(100_000)
            }
        );
        assert_eq!(
            c.clients.named["bot"].rate_limits,
            RateLimits {
                requests_per_minute: None,
                tokens_per_minute: Some(500)
            }
        );
        assert!(c.clients.named["free"].rate_limits.is_none());
        assert!(c.users.default.rate_limits.is_none());
        // Limits on `default` and none on a named entry: one warning each,
        // with the line of the entry.
        let text: Vec<String> = l.warnings.iter().map(|w| w.located("t.yaml")).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("t.yaml:8: clients.app.v2.rate_limits: `clients.default` has rate_limits but this entry has none"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("t.yaml:9: clients.free.rate_limits: ")
                && text[1].contains("client `free` is not rate limited"),
            "{text:?}"
        );
        for bad in ["0", "-5", "1.5", "lots", "1000000000001"] {
            let e = err(&format!(
                "clients:\n  default:\n    rate_limits:\n      requests_per_minute: {bad}\n"
            ));
            assert_eq!(
                (e.line, e.path.as_str()),
                (Some(4), "clients.default.rate_limits.requests_per_minute"),
                "{bad}: {e}"
            );
        }
        let e = err("clients:\n  default:\n    rate_limits: { per_hour: 5 }\n");
        assert!(e.message.contains("unknown field `per_hour`"), "{e}");
    }

    #[test]
    fn warnings_point_at_their_line() {
        let l = ok("\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 1
    # a comment
    model_access:
      whitelist: [ghost]
");
        assert_eq!(
            l.warnings[0].located("t.yaml"),
            "t.yaml:8: clients.default.model_access.whitelist: model `ghost` is not in the `models` catalog"
        );
    }

    #[test]
    fn responses_retention_defaults_to_30_days_and_is_checked() {
        use crate::domain::config::Retention;
        use crate::domain::time::DAY_MS;
        let retention = |yaml: &str| ok(yaml).config.server.responses_retention_ms();
        assert_eq!(retention("clients:\n"), 30 * DAY_MS);
        assert_eq!(retention("server:\n  responses:\n"), 30 * DAY_MS);
        assert_eq!(retention("server:\n  responses: {}\n"), 30 * DAY_MS);
        for (text, ms) in [
            ("7d", 7 * DAY_MS),
            ("12h", 12 * 3_600_000),
            ("90m", 90 * 60_000),
            ("1m", 60_000),
            ("60s", 60_000),
            ("\"2d\"", 2 * DAY_MS),
            ("30", 30 * DAY_MS),
        ] {
            let yaml = format!("server:\n  responses:\n    retention: {text}\n");
            assert_eq!(retention(&yaml), ms, "{text}");
        }
        for bad in [
            "0", "-1", "0d", "-2h", "59s", "1.5", "soon", "30w", "\"\"", "true", "[1d]",
        ] {
            let e = err(&format!("server:\n  responses:\n    retention: {bad}\n"));
            assert_eq!(
                (e.line, e.column, e.path.as_str()),
                (Some(3), Some(16), "server.responses.retention"),
                "{bad}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with("t.yaml:3:16: server.responses.retention: "),
                "{bad}: {e}"
            );
        }
        let e = err("server:\n  responses:\n    retention: 30s\n");
        assert!(e.message.contains("at least 1 minute"), "{e}");
        let e = err("server:\n  responses:\n    retention: forever\n");
        assert!(
            e.message.contains("positive duration") && e.message.contains("`forever`"),
            "{e}"
        );
        let e = err("server:\n  responses:\n    retain: 5d\n");
        assert!(e.message.contains("unknown field `retain`"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        // What the config serializes to reads back as the same retention.
        let r = Retention::parse("2h").unwrap();
        let back: Retention = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_committed_example_is_valid() {
        let text = include_str!("../../../tollgate.yaml");
        let l = ok(text);
        assert!(l.config.models.contains_key("dummy"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn deployments_and_fallbacks() {
        let c = ok("\
models:
  llama:
    price: { input: 1, output: 1 }
    fallbacks: [small, nowhere]
    deployments:
      - { name: a, provider: openai, base_url: http://a:8000/v1/, upstream_model: l, weight: 3, max_in_flight: 8 }
      - { provider: openai, base_url: http://b:8000/v1, upstream_model: l, timeout_secs: 5 }
  small: { provider: dummy, price: { input: 0, output: 0 } }
");
        let m = &c.config.models["llama"];
        let names: Vec<_> = m
            .deployments
            .iter()
            .map(|d| (d.name.as_str(), d.weight, d.max_in_flight))
            .collect();
        assert_eq!(names, [("a", 3, Some(8)), ("1", 1, None)]);
        assert_eq!(m.deployments[1].timeout_secs, Some(5));
        assert_eq!(c.config.models["small"].deployments[0].name, "default");
        assert!(
            c.warnings.iter().any(|w| w
                .to_string()
                .contains("fallback `nowhere` is not in the catalog")),
            "{:?}",
            c.warnings
        );
        let text = crate::domain::plan::models_text(&c.config);
        assert!(text.contains("model llama: 2 deployments"), "{text}");
        assert!(
            text.contains("  a: openai http://a:8000/v1 as `l` (weight 3, at most 8 in flight)"),
            "{text}"
        );
        assert!(
            text.contains("model small: one upstream, the built-in dummy"),
            "{text}"
        );

        for (yaml, says) in [
            ("    provider: dummy\n    deployments:\n      - { provider: dummy }\n", "not both"),
            ("    deployments: []\n", "1 to 32"),
            ("    deployments:\n      - { name: x, provider: dummy }\n      - { name: x, provider: dummy }\n", "used twice"),
            ("    deployments:\n      - { provider: dummy }\n      - { provider: openai, base_url: http://b/v1, upstream_model: l }\n", "same provider"),
            ("    deployments:\n      - { provider: dummy, weight: 0 }\n", "`weight` must be at least 1"),
            ("    deployments:\n      - { provider: openai, upstream_model: l }\n", "deployments[0]: provider `openai` needs `base_url`"),
            ("    deployments:\n      - { provider: dummy, colour: red }\n", "unknown field `colour`"),
            ("    price: { input: 1, output: 1 }\n", "`provider` is required"),
            ("    provider: dummy\n    responses_api: native\n", "`responses_api` applies only to provider `openai`"),
            ("    provider: openai\n    base_url: ftp://x\n    upstream_model: l\n", "must start with http:// or https://"),
        ] {
            let head = if yaml.contains("price:") { "" } else { "    price: { input: 1, output: 1 }\n" };
            let e = err(&format!("models:\n  m:\n{head}{yaml}"));
            assert!(e.to_string().contains(says), "{yaml}: {e}");
            assert!(e.path.starts_with("models.m"), "{e}");
        }
    }

    #[test]
    fn auth_section_is_parsed_with_positions() {
        // No `auth:` means local accounts and no single sign-on.
        let c = ok("models: {}\n").config;
        assert!(c.auth.local && c.auth.oidc.is_none());
        // PATH is set in every test environment.
        let yaml = "auth:\n  local: false\n  oidc:\n    issuer: https://id.example.com\n    client_id: tollgate\n    client_secret_env: PATH\n    display_name: Keycloak\n    role_claim: groups\n    roles:\n      admin: [tollgate-admins]\n      manager: [tollgate-managers]\n    create_users: true\n    default_role: manager\n";
        let c = ok(yaml).config;
        assert!(!c.auth.local);
        let o = c.auth.oidc.unwrap();
        assert_eq!(o.issuer.as_str(), "https://id.example.com");
        assert_eq!(o.roles.admin[0].as_str(), "tollgate-admins");
        assert!(o.create_users);
        let e = err(&yaml.replace("PATH", "TOLLGATE_TEST_SURELY_UNSET_SECRET"));
        assert_eq!(
            (e.line, e.column, e.path.as_str()),
            (Some(6), Some(5), "auth.oidc.client_secret_env"),
            "{e}"
        );
        assert!(
            e.to_string().contains("TOLLGATE_TEST_SURELY_UNSET_SECRET"),
            "{e}"
        );
        let e = err(&yaml.replace("default_role: manager", "default_role: admin"));
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(13), "auth.oidc.default_role"),
            "{e}"
        );
        let e = err(&yaml.replace("https://id.example.com", "http://id.example.com"));
        assert_eq!(
            (e.line, e.path.as_str()),
            (Some(4), "auth.oidc.issuer"),
            "{e}"
        );
        let e = err(&yaml.replace("  local: false", "  locals: false"));
        assert!(e.to_string().contains("unknown field `locals`"), "{e}");
        let e = err(&yaml.replace("    create_users", "    colour: red\n    create_users"));
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = err("auth:\n  oidc:\n    issuer: https://x\n");
        assert!(e.to_string().contains("missing field `client_id`"), "{e}");
    }
}
