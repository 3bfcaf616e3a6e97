//! Declared WITH keys: every key a source, a sink or the job reads, with its type, default and
//! doc. Each connector declares its keys in its own module (a [`Connector`]); readers go through
//! [`Keys`], which reads only declared keys and parses values by their declared type. The
//! planner refuses a key that no declaration names (`connectors::config_keys`), and
//! docs/config.md is rendered from the same declarations.

use super::properties::{parse_duration_ms, Properties};
use super::ttl::{STATE_TTL, STATE_TTL_CLOCK};
use super::window::{
    LATE_DATA_ALLOWED_LATENESS, LATE_DATA_DLQ_PATH, LATE_DATA_STRATEGY, WATERMARK_IDLE_TIMEOUT,
    WATERMARK_MAX_OUT_OF_ORDERNESS,
};
use crate::error::{Result, VeloError};

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Any text: a path, a column, a topic, a pattern.
    Text,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`).
    Bool,
    /// A whole number of at least `min`.
    Integer { min: i64 },
    /// A duration such as `5s`, `100ms` or `INTERVAL '5' SECOND`; more than zero when
    /// `positive`.
    Duration { positive: bool },
    /// Column names, comma-separated.
    List,
    /// One of these values, in any case; the first ones are the usual spellings, later ones
    /// are accepted too.
    Choice(&'static [&'static str]),
    /// One character (`\t` or `tab` for a tab).
    Char,
    /// A librdkafka property that velostream sets or gives a meaning to: handed to the client
    /// as written, and its value checked by librdkafka.
    Client,
}

impl KeyKind {
    /// What a value of this kind looks like, for errors and the docs.
    pub fn describe(&self) -> String {
        match self {
            KeyKind::Text => "text".into(),
            KeyKind::Bool => "true or false".into(),
            KeyKind::Integer { min } => format!("a whole number, at least {min}"),
            KeyKind::Duration { positive: false } => "a duration such as 5s".into(),
            KeyKind::Duration { positive: true } => "a positive duration such as 5s".into(),
            KeyKind::List => "column names, comma-separated".into(),
            KeyKind::Choice(values) => match values.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => "nothing".into(),
            },
            KeyKind::Char => "one character (\\t or tab for a tab)".into(),
            KeyKind::Client => "a librdkafka value".into(),
        }
    }

    /// Checks `value`; Err says what was expected.
    pub fn check(&self, value: &str) -> std::result::Result<(), String> {
        let ok = match self {
            KeyKind::Text | KeyKind::List | KeyKind::Client => true,
            KeyKind::Bool => parse_bool(value).is_some(),
            KeyKind::Integer { min } => parse_integer(value, *min).is_some(),
            KeyKind::Duration { positive } => parse_duration(value, *positive).is_some(),
            KeyKind::Choice(values) => parse_choice(value, values).is_some(),
            KeyKind::Char => parse_char(value).is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(self.describe())
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_integer(value: &str, min: i64) -> Option<i64> {
    value.trim().parse::<i64>().ok().filter(|n| *n >= min)
}

fn parse_duration(value: &str, positive: bool) -> Option<i64> {
    parse_duration_ms(value).filter(|ms| *ms > 0 || (!positive && *ms == 0))
}

fn parse_choice(value: &str, values: &'static [&'static str]) -> Option<&'static str> {
    let value = value.trim();
    values
        .iter()
        .copied()
        .find(|v| v.eq_ignore_ascii_case(value))
}

fn parse_char(value: &str) -> Option<u8> {
    match value {
        "\\t" | "tab" => Some(b'\t'),
        v if v.len() == 1 => v.bytes().next(),
        _ => None,
    }
}

/// A key's value when it is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDefault {
    /// The key must be set.
    Required,
    /// Unset: the feature is off, or nothing is set.
    None,
    /// This value.
    Value(&'static str),
    /// Said in words (`the source's name`).
    Note(&'static str),
}

/// One declared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// What follows `'<name>.'` (the whole key for the job's).
    pub name: &'static str,
    /// What its value must be.
    pub kind: KeyKind,
    /// What it is when unset.
    pub default: KeyDefault,
    /// One line for docs/config.md (markdown).
    pub doc: &'static str,
}

/// Where a connector sits in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A name in FROM.
    Source,
    /// The statement's own name (CSAS/CTAS, `@job_name`).
    Sink,
    /// Not a name: the job's own keys, unscoped.
    Job,
}

/// What a name in WITH keys can be, and the keys it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connector {
    /// The `'<name>.type'` value that makes a name this (a label for those without one).
    pub kind: &'static str,
    /// How errors name it: `file_source 't'`.
    pub label: &'static str,
    /// Where the name sits in a query.
    pub role: Role,
    /// One paragraph for docs/config.md (markdown).
    pub doc: &'static str,
    /// Every key it reads.
    pub keys: &'static [KeySpec],
    /// Keys it does not declare are librdkafka properties, checked by librdkafka.
    pub librdkafka: bool,
}

impl Connector {
    /// The declared key `name`.
    pub fn key(&self, name: &str) -> Option<&'static KeySpec> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// `'<name>.type'`: what the name is; `default` says when a name without one is this
/// connector.
pub const fn type_key(default: KeyDefault) -> KeySpec {
    KeySpec {
        name: "type",
        kind: KeyKind::Text,
        default,
        doc: "What the name is: the connector this section describes.",
    }
}

/// `'<name>.config_file'`: more keys from a YAML file.
pub const CONFIG_FILE: KeySpec = KeySpec {
    name: "config_file",
    kind: KeyKind::Text,
    default: KeyDefault::None,
    doc: "A YAML file of more keys for this name (nested maps flatten with dots); keys in the \
          SQL override it. Its keys are checked like the SQL's.",
};

/// The job's own keys: unscoped, on the query or on its sources' declarations.
pub const JOB: Connector = Connector {
    kind: "job",
    label: "the job",
    role: Role::Job,
    doc: "Unscoped keys (`'late.data.strategy' = 'drop'`, no name in front), on the query's WITH \
          or on a declaration of a source it reads.",
    keys: &[
        LATE_DATA_ALLOWED_LATENESS,
        LATE_DATA_STRATEGY,
        LATE_DATA_DLQ_PATH,
        STATE_TTL,
        STATE_TTL_CLOCK,
    ],
    librdkafka: false,
};

/// A source that is an earlier statement's output: its rows come from memory (velo-sql-batch)
/// or its sink's topic (velo-sql), so only the watermark is set on the reading side.
pub const UPSTREAM: Connector = Connector {
    kind: "upstream",
    label: "the earlier statement's output",
    role: Role::Source,
    doc: "A source that is an earlier statement's output (`FROM totals`, where `totals` is a \
          CSAS of the same script): it is read from memory in velo-sql-batch and from its sink's \
          topic in velo-sql, as that statement's keys say; the reading query sets only its \
          watermark.",
    keys: &[WATERMARK_MAX_OUT_OF_ORDERNESS, WATERMARK_IDLE_TIMEOUT],
    librdkafka: false,
};

/// The declared keys of one name (or of the job), read from a statement's properties.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    props: &'a Properties,
    /// None: the job's unscoped keys.
    name: Option<&'a str>,
    keys: &'static [KeySpec],
    label: &'static str,
}

impl<'a> Keys<'a> {
    /// The keys `'<name>.*'` of a connector.
    pub fn of(props: &'a Properties, name: &'a str, connector: &'static Connector) -> Self {
        Keys {
            props,
            name: Some(name),
            keys: connector.keys,
            label: connector.label,
        }
    }

    /// The keys `'<name>.*'` of a group that several connectors declare (the watermark's, a
    /// Kafka topic's), named `label` in errors.
    pub fn group(
        props: &'a Properties,
        name: &'a str,
        keys: &'static [KeySpec],
        label: &'static str,
    ) -> Self {
        Keys {
            props,
            name: Some(name),
            keys,
            label,
        }
    }

    /// The job's unscoped keys.
    pub fn job(props: &'a Properties) -> Self {
        Keys {
            props,
            name: None,
            keys: JOB.keys,
            label: JOB.label,
        }
    }

    /// The name the keys are scoped to (None: the job's).
    pub fn name(&self) -> Option<&'a str> {
        self.name
    }

    /// The key as written in WITH: `t.path`, `late.data.strategy`.
    pub fn full_name(&self, spec: &KeySpec) -> String {
        match self.name {
            Some(name) => format!("{name}.{}", spec.name),
            None => spec.name.to_string(),
        }
    }

    /// The raw value; `VELOSTREAM_<NAME>_<KEY>` in the environment overrides a named key.
    pub fn text(&self, spec: &KeySpec) -> Option<String> {
        debug_assert!(
            self.keys.iter().any(|k| k.name == spec.name),
            "'{}' is read but not declared for {}",
            spec.name,
            self.label
        );
        match self.name {
            Some(name) => self.props.scoped(name, spec.name),
            None => self.props.get(spec.name).map(str::to_string),
        }
    }

    /// A value that does not parse as `spec` says, as an error naming the key.
    fn invalid(&self, spec: &KeySpec, value: &str) -> VeloError {
        let whose = match self.name {
            Some(name) => format!(" for {} '{name}'", self.label),
            None => String::new(),
        };
        VeloError::Config(format!(
            "'{}' = '{value}'{whose}: expected {}",
            self.full_name(spec),
            spec.kind.describe()
        ))
    }

    /// Parses the value with `parse`, or says what was expected.
    fn parsed<T>(&self, spec: &KeySpec, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>> {
        match self.text(spec) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).ok_or_else(|| self.invalid(spec, &v)),
        }
    }

    /// A `Bool` key.
    pub fn bool(&self, spec: &KeySpec) -> Result<Option<bool>> {
        self.parsed(spec, parse_bool)
    }

    /// An `Integer` key, at least its declared minimum.
    pub fn integer(&self, spec: &KeySpec) -> Result<Option<i64>> {
        let min = match spec.kind {
            KeyKind::Integer { min } => min,
            _ => i64::MIN,
        };
        self.parsed(spec, |v| parse_integer(v, min))
    }

    /// An `Integer` key of at least 0, as a count.
    pub fn count(&self, spec: &KeySpec) -> Result<Option<usize>> {
        match self.integer(spec)? {
            None => Ok(None),
            Some(n) => match usize::try_from(n) {
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(self.invalid(spec, &n.to_string())),
            },
        }
    }

    /// A `Duration` key, in milliseconds.
    pub fn duration_ms(&self, spec: &KeySpec) -> Result<Option<i64>> {
        let positive = matches!(spec.kind, KeyKind::Duration { positive: true });
        self.parsed(spec, |v| parse_duration(v, positive))
    }

    /// A `List` key (empty when unset).
    pub fn list(&self, spec: &KeySpec) -> Vec<String> {
        self.text(spec)
            .map(|list| list.split(',').map(|f| f.trim().to_string()).collect())
            .unwrap_or_default()
    }

    /// A `Choice` key, as the declared spelling it matches.
    pub fn choice(&self, spec: &KeySpec) -> Result<Option<&'static str>> {
        let KeyKind::Choice(values) = spec.kind else {
            return Ok(None);
        };
        self.parsed(spec, |v| parse_choice(v, values))
    }

    /// A `Char` key, as a byte.
    pub fn char(&self, spec: &KeySpec) -> Result<Option<u8>> {
        self.parsed(spec, parse_char)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAG: KeySpec = KeySpec {
        name: "flag",
        kind: KeyKind::Bool,
        default: KeyDefault::Value("false"),
        doc: "A flag.",
    };
    const SIZE: KeySpec = KeySpec {
        name: "size",
        kind: KeyKind::Integer { min: 1 },
        default: KeyDefault::Value("8"),
        doc: "A size.",
    };
    const MODE: KeySpec = KeySpec {
        name: "mode",
        kind: KeyKind::Choice(&["fast", "slow"]),
        default: KeyDefault::Value("fast"),
        doc: "A mode.",
    };
    const SEP: KeySpec = KeySpec {
        name: "sep",
        kind: KeyKind::Char,
        default: KeyDefault::Value(","),
        doc: "A separator.",
    };
    const WAIT: KeySpec = KeySpec {
        name: "wait",
        kind: KeyKind::Duration { positive: true },
        default: KeyDefault::None,
        doc: "A wait.",
    };
    const TEST: Connector = Connector {
        kind: "test_source",
        label: "test_source",
        role: Role::Source,
        doc: "A test.",
        keys: &[FLAG, SIZE, MODE, SEP, WAIT],
        librdkafka: false,
    };

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::default();
        for (k, v) in pairs {
            p.insert(*k, *v);
        }
        p
    }

    #[test]
    fn values_parse_by_their_declared_kind() {
        let p = props(&[
            ("t.flag", "yes"),
            ("t.size", "12"),
            ("t.mode", "SLOW"),
            ("t.sep", "\\t"),
            ("t.wait", "2s"),
        ]);
        let keys = Keys::of(&p, "t", &TEST);
        assert_eq!(keys.bool(&FLAG).expect("bool"), Some(true));
        assert_eq!(keys.count(&SIZE).expect("count"), Some(12));
        assert_eq!(keys.choice(&MODE).expect("choice"), Some("slow"));
        assert_eq!(keys.char(&SEP).expect("char"), Some(b'\t'));
        assert_eq!(keys.duration_ms(&WAIT).expect("duration"), Some(2_000));
        let unset = props(&[]);
        assert_eq!(
            Keys::of(&unset, "t", &TEST).bool(&FLAG).expect("unset"),
            None
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_the_key_the_connector_and_what_was_expected() {
        let cases = [
            ("t.flag", "maybe", FLAG, "expected true or false"),
            ("t.size", "0", SIZE, "expected a whole number, at least 1"),
            ("t.mode", "medium", MODE, "expected fast or slow"),
            ("t.sep", ";;", SEP, "expected one character"),
            ("t.wait", "0s", WAIT, "expected a positive duration"),
        ];
        for (key, value, spec, expected) in cases {
            let p = props(&[(key, value)]);
            let keys = Keys::of(&p, "t", &TEST);
            let err = match spec.kind {
                KeyKind::Bool => keys.bool(&spec).map(|_| ()),
                KeyKind::Integer { .. } => keys.count(&spec).map(|_| ()),
                KeyKind::Choice(_) => keys.choice(&spec).map(|_| ()),
                KeyKind::Char => keys.char(&spec).map(|_| ()),
                _ => keys.duration_ms(&spec).map(|_| ()),
            }
            .expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains(&format!("'{key}' = '{value}' for test_source 't'")),
                "{text}"
            );
            assert!(text.contains(expected), "{text}");
            assert_eq!(spec.kind.check(value), Err(spec.kind.describe()));
        }
    }

    #[test]
    #[should_panic(expected = "'other' is read but not declared for test_source")]
    #[cfg(debug_assertions)]
    fn reading_an_undeclared_key_is_a_bug_caught_in_debug_builds() {
        const OTHER: KeySpec = KeySpec {
            name: "other",
            kind: KeyKind::Text,
            default: KeyDefault::None,
            doc: "Not in TEST.",
        };
        let p = props(&[]);
        let _ = Keys::of(&p, "t", &TEST).text(&OTHER);
    }
}
