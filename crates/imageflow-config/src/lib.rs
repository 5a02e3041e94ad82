//! Settings from environment variables, shared by every imageflow binary.
//!
//! * [`Env`] reads a variable map (tests pass their own, `main` passes the
//!   process environment): values are trimmed and an empty value counts as
//!   unset, because Helm renders a missing value as `""`.
//! * [`Setting`] declares a variable once: its name, its default and its help.
//!   The code parses the same default text that `--help` prints, so the two
//!   cannot drift.
//! * [`ConfigError`] is the one error every loader returns: the variable, the
//!   bad value and what is accepted, in one line fit for a start-up failure.

use std::{
    collections::HashMap,
    fmt::{self, Display},
    net::SocketAddr,
    ops::{Bound, RangeBounds},
    str::FromStr,
    time::Duration,
};

/// A setting that cannot be used. Display: `VARIABLE: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ConfigError {
    pub fn invalid(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }

    /// `"raw" is not EXPECTED`: the value as given, quoted, so stray spaces
    /// and empty list entries show.
    pub fn bad_value(variable: impl Into<String>, raw: &str, expected: &str) -> Self {
        Self::invalid(variable, format!("{raw:?} is not {expected}"))
    }

    /// The environment variable at fault.
    pub fn variable(&self) -> &str {
        &self.variable
    }
}

/// The default of a [`Setting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingDefault {
    /// Text the code parses when the variable is unset, exactly as `--help`
    /// prints it.
    Value(&'static str),
    /// What happens when the variable is unset (nothing, or a value worked out
    /// at start such as the number of CPUs); only `--help` reads it.
    Described(&'static str),
}

impl Display for SettingDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(text) | Self::Described(text) => f.write_str(text),
        }
    }
}

/// One documented environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The variable; a help-only entry may name several (`A / B`).
    pub name: &'static str,
    pub default: SettingDefault,
    pub help: &'static str,
}

impl Setting {
    /// A setting whose default is a value the code parses.
    pub const fn new(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self {
            name,
            default: SettingDefault::Value(default),
            help,
        }
    }

    /// A setting whose default is not a literal value (unset, or computed).
    pub const fn described(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self {
            name,
            default: SettingDefault::Described(default),
            help,
        }
    }

    /// The literal default, if this setting has one.
    pub fn default_value(&self) -> Option<&'static str> {
        match self.default {
            SettingDefault::Value(text) => Some(text),
            SettingDefault::Described(_) => None,
        }
    }

    /// The literal default parsed as `T`. An error names the setting when its
    /// declaration is wrong (no literal default, or one that is not `expected`):
    /// a binary's tests that load the defaults catch it.
    pub fn parsed_default<T: FromStr>(&self, expected: &str) -> Result<T, ConfigError> {
        self.default_value()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                ConfigError::invalid(
                    self.name,
                    format!(
                        "the built-in default {:?} is not {expected}",
                        self.default.to_string()
                    ),
                )
            })
    }
}

/// Printed defaults that replace the declared ones, by setting name: a default
/// that differs per binary, known only to the binary.
pub type DefaultOverrides<'a> = [(&'a str, String)];

/// `--help` lines for `settings`, one entry per setting.
pub fn help_lines(settings: &[Setting], overrides: &DefaultOverrides<'_>) -> String {
    let mut text = String::new();
    for s in settings {
        let default = overrides
            .iter()
            .find(|(name, _)| *name == s.name)
            .map_or_else(|| s.default.to_string(), |(_, value)| value.clone());
        text.push_str(&format!(
            "  {}\n      {} (default: {default})\n",
            s.name, s.help
        ));
    }
    text
}

/// A number type settings can hold.
pub trait Number: FromStr + Display + PartialOrd + Copy {
    /// How the expected value is described in an error.
    const KIND: &'static str;
    /// `self` counted in `unit`; `None` when negative or too large.
    fn to_duration(self, unit: Unit) -> Option<Duration>;
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            const KIND: &'static str = "a whole number";
            fn to_duration(self, unit: Unit) -> Option<Duration> {
                let n = u64::try_from(self).ok()?;
                Some(match unit {
                    Unit::Seconds => Duration::from_secs(n),
                    Unit::Millis => Duration::from_millis(n),
                })
            }
        }
    )*};
}
whole_number!(u16, u32, u64, usize, i32, i64);

impl Number for f64 {
    const KIND: &'static str = "a number";
    fn to_duration(self, unit: Unit) -> Option<Duration> {
        let seconds = match unit {
            Unit::Seconds => self,
            Unit::Millis => self / 1000.0,
        };
        Duration::try_from_secs_f64(seconds).ok()
    }
}

/// The unit a duration variable counts in (its name says which: `_SECONDS`, `_MS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Millis => "milliseconds",
        }
    }
}

/// ` from 1 to 64`, ` of at least 1`, ...: the accepted range in words.
fn describe_range<T: Display>(range: &impl RangeBounds<T>) -> String {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(a), Bound::Included(b)) => format!(" from {a} to {b}"),
        (Bound::Excluded(a), Bound::Included(b)) => format!(" above {a} and at most {b}"),
        (Bound::Included(a), Bound::Excluded(b)) => format!(" from {a} to below {b}"),
        (Bound::Excluded(a), Bound::Excluded(b)) => format!(" between {a} and {b}"),
        (Bound::Included(a), Bound::Unbounded) => format!(" of at least {a}"),
        (Bound::Excluded(a), Bound::Unbounded) => format!(" above {a}"),
        (Bound::Unbounded, Bound::Included(b)) => format!(" of at most {b}"),
        (Bound::Unbounded, Bound::Excluded(b)) => format!(" below {b}"),
        (Bound::Unbounded, Bound::Unbounded) => String::new(),
    }
}

/// A variable map to read settings from.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    vars: &'a HashMap<String, String>,
}

impl<'a> Env<'a> {
    pub fn new(vars: &'a HashMap<String, String>) -> Self {
        Self { vars }
    }

    /// The trimmed value of `name`; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` as given (a password may end in a space); `None`
    /// when unset or empty.
    pub fn get_untrimmed(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `setting`, else its literal default; `None` when unset
    /// and the setting has no literal default.
    pub fn text(&self, setting: &Setting) -> Option<&'a str> {
        self.get(setting.name).or(setting.default_value())
    }

    /// `name` parsed as `T` if `valid` accepts it; `None` when unset.
    /// `expected` completes "… is not EXPECTED" in the error.
    pub fn parse<T: FromStr>(
        &self,
        name: &str,
        expected: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match raw.parse::<T>() {
            Ok(value) if valid(&value) => Ok(Some(value)),
            _ => Err(ConfigError::bad_value(name, raw, expected)),
        }
    }

    /// `setting` parsed as `T`; its literal default when unset.
    pub fn value<T: FromStr>(&self, setting: &Setting, expected: &str) -> Result<T, ConfigError> {
        match self.parse(setting.name, expected, |_| true)? {
            Some(value) => Ok(value),
            None => setting.parsed_default(expected),
        }
    }

    /// `name` as a number within `range`; `default` when unset.
    pub fn number_or<T: Number>(
        &self,
        name: &str,
        default: T,
        range: impl RangeBounds<T>,
    ) -> Result<T, ConfigError> {
        let expected = format!("{}{} (default {default})", T::KIND, describe_range(&range));
        Ok(self
            .parse(name, &expected, |v| range.contains(v))?
            .unwrap_or(default))
    }

    /// `setting` as a number within `range`; its default when unset.
    pub fn number<T: Number>(
        &self,
        setting: &Setting,
        range: impl RangeBounds<T>,
    ) -> Result<T, ConfigError> {
        let default = setting.parsed_default(T::KIND)?;
        self.number_or(setting.name, default, range)
    }

    /// `name` as an amount of `unit` (whole or fractional as `T` is) within
    /// `range`; `default` (in `unit`) when unset.
    pub fn duration_or<T: Number>(
        &self,
        name: &str,
        unit: Unit,
        default: T,
        range: impl RangeBounds<T>,
    ) -> Result<Duration, ConfigError> {
        let expected = format!(
            "{} of {}{} (default {default})",
            T::KIND,
            unit.name(),
            describe_range(&range)
        );
        let amount = self
            .parse(name, &expected, |v: &T| {
                range.contains(v) && v.to_duration(unit).is_some()
            })?
            .unwrap_or(default);
        amount.to_duration(unit).ok_or_else(|| {
            ConfigError::invalid(name, format!("the default {default} is not {expected}"))
        })
    }

    /// `setting` as an amount of `unit` within `range`; its default when unset.
    pub fn duration<T: Number>(
        &self,
        setting: &Setting,
        unit: Unit,
        range: impl RangeBounds<T>,
    ) -> Result<Duration, ConfigError> {
        let default = setting.parsed_default(T::KIND)?;
        self.duration_or(setting.name, unit, default, range)
    }

    /// `setting` as a socket address; its default when unset.
    pub fn addr(&self, setting: &Setting) -> Result<SocketAddr, ConfigError> {
        self.value(setting, "an address like 0.0.0.0:9090")
    }

    /// `name` as a socket address; `None` when unset.
    pub fn optional_addr(&self, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.parse(name, "an address like 0.0.0.0:9464", |_| true)
    }

    /// `name` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`,
    /// any case); `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::bad_value(
                name,
                raw,
                "a boolean; accepted: true/false, 1/0, yes/no, on/off",
            )),
        }
    }

    /// `name` as one of the `choices` (compared without regard to case);
    /// `None` when unset.
    pub fn choice<T: Copy>(
        &self,
        name: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match choices
            .iter()
            .find(|(text, _)| text.eq_ignore_ascii_case(raw))
        {
            Some((_, value)) => Ok(Some(*value)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(text, _)| *text).collect();
                Err(ConfigError::bad_value(
                    name,
                    raw,
                    &format!("one of {}", names.join(", ")),
                ))
            }
        }
    }

    /// The comma-separated entries of `setting` (trimmed, blanks dropped),
    /// else of its literal default; `None` when neither gives one.
    pub fn list(&self, setting: &Setting) -> Option<Vec<&'a str>> {
        self.text(setting).map(split_list)
    }

    /// `name` as an absolute URL with one of `schemes` (`http`, `https`) and
    /// a host, `/`s at the end dropped; `None` when unset.
    pub fn url(&self, name: &str, schemes: &[&str]) -> Result<Option<&'a str>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        if is_url(raw, schemes) {
            Ok(Some(raw.trim_end_matches('/')))
        } else {
            let forms: Vec<String> = schemes.iter().map(|s| format!("{s}://host:port")).collect();
            Err(ConfigError::bad_value(
                name,
                raw,
                &format!("a URL like {}", forms.join(" or ")),
            ))
        }
    }
}

/// A variable map from pairs, for tests and tools that build one by hand.
pub fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The trimmed, non-blank entries of a comma-separated list.
pub fn split_list(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `url` starts with one of `schemes` and `://`, then a host.
pub fn is_url(url: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && url[scheme.len()..]
                .strip_prefix("://")
                .and_then(|rest| rest.split(['/', '?', '#']).next())
                .is_some_and(|authority| {
                    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                    !host.is_empty()
                        && !host.starts_with(':')
                        && !host.contains(char::is_whitespace)
                })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const WORKERS: Setting = Setting::new("WORKERS", "4", "workers");
    const LISTEN: Setting = Setting::new("LISTEN", "0.0.0.0:9090", "address");
    const GRACE: Setting = Setting::new("GRACE_SECONDS", "20", "grace");
    const PEERS: Setting = Setting::new("PEERS", "a:1, b:2", "peers");
    const TOKEN: Setting = Setting::described("TOKEN", "unset (no auth)", "secret");

    #[test]
    fn blank_counts_as_unset_and_values_are_trimmed() {
        let map = vars(&[("A", "  "), ("B", " x "), ("C", "")]);
        let env = Env::new(&map);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
        assert_eq!(env.get("C"), None);
        assert_eq!(env.get("MISSING"), None);
        assert_eq!(env.get_untrimmed("B"), Some(" x "));
        assert_eq!(env.get_untrimmed("C"), None);
        assert_eq!(env.number::<usize>(&WORKERS, 1..).unwrap(), 4);
    }

    #[test]
    fn defaults_come_from_the_declaration() {
        let map = vars(&[]);
        let env = Env::new(&map);
        assert_eq!(env.number::<usize>(&WORKERS, 1..=8).unwrap(), 4);
        assert_eq!(env.addr(&LISTEN).unwrap().to_string(), "0.0.0.0:9090");
        assert_eq!(
            env.duration::<f64>(&GRACE, Unit::Seconds, 0.0..=60.0)
                .unwrap(),
            Duration::from_secs(20)
        );
        assert_eq!(env.list(&PEERS).unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(env.text(&TOKEN), None);
        // A help-only default cannot be read as a value: the declaration is wrong.
        let err = env.number::<u32>(&TOKEN, ..).unwrap_err();
        assert_eq!(err.variable, "TOKEN");
        assert!(err.message.contains("built-in default"), "{err}");
    }

    #[test]
    fn values_win_over_defaults() {
        let map = vars(&[
            ("WORKERS", "6"),
            ("LISTEN", "127.0.0.1:7000"),
            ("GRACE_SECONDS", "1.5"),
            ("PEERS", "x:1,, y:2 ,"),
            ("DELAY_MS", "250"),
        ]);
        let env = Env::new(&map);
        assert_eq!(env.number::<usize>(&WORKERS, 1..=8).unwrap(), 6);
        assert_eq!(env.addr(&LISTEN).unwrap().port(), 7000);
        assert_eq!(
            env.duration::<f64>(&GRACE, Unit::Seconds, 0.0..=60.0)
                .unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(env.list(&PEERS).unwrap(), vec!["x:1", "y:2"]);
        assert_eq!(
            env.duration_or::<u64>("DELAY_MS", Unit::Millis, 10, 1..)
                .unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            env.duration_or::<f64>("DELAY_MS", Unit::Millis, 2.0, 0.0..=1000.0)
                .unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn errors_name_the_variable_the_value_and_what_is_expected() {
        let map = vars(&[
            ("WORKERS", "many"),
            ("ZERO", "0"),
            ("LISTEN", "localhost"),
            ("WHOLE_MS", "1.5"),
            ("NEG_SECONDS", "-1"),
            ("NAN_SECONDS", "NaN"),
            ("FLAG", "maybe"),
            ("MODE", "sometimes"),
            ("URL", "collector:4317"),
        ]);
        let env = Env::new(&map);
        let cases: Vec<(ConfigError, &str, &[&str])> = vec![
            (
                env.number::<usize>(&WORKERS, 1..=8).unwrap_err(),
                "WORKERS",
                &["\"many\"", "a whole number from 1 to 8", "default 4"],
            ),
            (
                env.number_or::<u32>("ZERO", 5, 1..).unwrap_err(),
                "ZERO",
                &["\"0\"", "at least 1"],
            ),
            (
                env.addr(&LISTEN).unwrap_err(),
                "LISTEN",
                &["\"localhost\"", "address"],
            ),
            (
                env.duration_or::<u64>("WHOLE_MS", Unit::Millis, 10, 1..=100)
                    .unwrap_err(),
                "WHOLE_MS",
                &["\"1.5\"", "whole number of milliseconds from 1 to 100"],
            ),
            (
                env.duration_or::<f64>("NEG_SECONDS", Unit::Seconds, 1.0, ..)
                    .unwrap_err(),
                "NEG_SECONDS",
                &["\"-1\"", "seconds"],
            ),
            (
                env.duration_or::<f64>("NAN_SECONDS", Unit::Seconds, 1.0, 0.0..=10.0)
                    .unwrap_err(),
                "NAN_SECONDS",
                &["\"NaN\""],
            ),
            (
                env.flag("FLAG", true).unwrap_err(),
                "FLAG",
                &["\"maybe\"", "true/false"],
            ),
            (
                env.choice("MODE", &[("direct", 1), ("queue", 2)])
                    .unwrap_err(),
                "MODE",
                &["\"sometimes\"", "one of direct, queue"],
            ),
            (
                env.url("URL", &["http"]).unwrap_err(),
                "URL",
                &["\"collector:4317\"", "http://host:port"],
            ),
        ];
        for (err, variable, hints) in cases {
            assert_eq!(err.variable(), variable, "{err}");
            let text = err.to_string();
            assert!(text.starts_with(&format!("{variable}: ")), "{text}");
            for hint in hints {
                assert!(text.contains(hint), "{text:?} lacks {hint:?}");
            }
        }
    }

    #[test]
    fn flags_choices_and_urls() {
        let map = vars(&[
            ("ON", "Yes"),
            ("OFF", "0"),
            ("MODE", "QUEUE"),
            ("URL", "http://jaeger:16686/"),
            ("TLS_URL", "HTTPS://user@host"),
            ("NO_HOST", "http://"),
            ("PORT_ONLY", "http://:80"),
        ]);
        let env = Env::new(&map);
        assert!(env.flag("ON", false).unwrap());
        assert!(!env.flag("OFF", true).unwrap());
        assert!(env.flag("UNSET", true).unwrap());
        assert_eq!(
            env.choice("MODE", &[("direct", 1), ("queue", 2)]).unwrap(),
            Some(2)
        );
        assert_eq!(env.choice::<u8>("UNSET", &[]).unwrap(), None);
        assert_eq!(
            env.url("URL", &["http", "https"]).unwrap(),
            Some("http://jaeger:16686")
        );
        assert!(env.url("TLS_URL", &["http", "https"]).unwrap().is_some());
        assert!(env.url("TLS_URL", &["http"]).is_err());
        assert!(env.url("NO_HOST", &["http"]).is_err());
        assert!(env.url("PORT_ONLY", &["http"]).is_err());
        assert_eq!(env.url("UNSET", &["http"]).unwrap(), None);
    }

    #[test]
    fn help_prints_each_setting_with_its_default() {
        let text = help_lines(
            &[WORKERS, TOKEN],
            &[("WORKERS", "8 for this binary".to_string())],
        );
        assert!(text.contains("  WORKERS\n      workers (default: 8 for this binary)\n"));
        assert!(text.contains("  TOKEN\n      secret (default: unset (no auth))\n"));
    }

    #[test]
    fn error_display_is_one_line_naming_the_variable() {
        let err = ConfigError::invalid("STORAGE_URL", "bad");
        assert_eq!(err.to_string(), "STORAGE_URL: bad");
        assert_eq!(err.variable(), "STORAGE_URL");
        let err = ConfigError::bad_value("X", " y", "a thing");
        assert_eq!(err.to_string(), "X: \" y\" is not a thing");
    }
}
