//! `WITH ('<name>.<key>' = 'value', ...)` properties, looked up per source or sink name.

use std::collections::BTreeMap;

use crate::error::{Result, VeloError};

/// The WITH keys of one statement (plus CLI bindings), as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    values: BTreeMap<String, String>,
    /// Where keys were written, for errors that point at them (keys set by code have none).
    origins: BTreeMap<String, KeyOrigin>,
}

/// Where a WITH key was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// In the SQL, the key's string at this 1-based line and column.
    Sql { line: u64, column: u64 },
    /// In the YAML file of `'<name>.config_file'` (the `config_file` key names the name).
    File {
        path: String,
        config_file_key: String,
    },
}

impl Properties {
    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// Sets `key` to `value` as written at `origin`.
    pub fn insert_at(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        origin: KeyOrigin,
    ) {
        let key = key.into();
        self.origins.insert(key.clone(), origin);
        self.values.insert(key, value.into());
    }

    /// Where `key` was written, when it was.
    pub fn origin(&self, key: &str) -> Option<&KeyOrigin> {
        self.origins.get(key)
    }

    /// Adds every key of `other` that is not set here.
    pub fn merge_missing(&mut self, other: &Properties) {
        for (k, v) in &other.values {
            if !self.values.contains_key(k) {
                self.values.insert(k.clone(), v.clone());
                if let Some(origin) = other.origins.get(k) {
                    self.origins.insert(k.clone(), origin.clone());
                }
            }
        }
    }

    /// The raw value of a full key such as `late.data.strategy`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `<name>.<key>`; `VELOSTREAM_<NAME>_<KEY>` in the environment overrides it.
    /// Connectors read their keys through `key_spec::Keys`, which parses them by their
    /// declared type; this raw lookup serves dispatch on `type` and librdkafka pass-through.
    pub fn scoped(&self, name: &str, key: &str) -> Option<String> {
        let env_key = format!("VELOSTREAM_{}_{}", name, key)
            .to_uppercase()
            .replace(['.', '-'], "_");
        if let Ok(v) = std::env::var(env_key) {
            return Some(v);
        }
        self.values.get(&format!("{name}.{key}")).cloned()
    }

    /// True when any key is scoped to `name`.
    pub fn has_scope(&self, name: &str) -> bool {
        let prefix = format!("{name}.");
        self.values.keys().any(|k| k.starts_with(&prefix))
    }

    /// All keys, for diagnostics.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }

    /// Loads every `'<name>.config_file'` (YAML): its keys apply to `<name>` where the
    /// statement does not set them. Nested maps flatten with dots (`bootstrap: {servers: x}` is
    /// `bootstrap.servers`). So SQL keys override the file, and `VELOSTREAM_<NAME>_<KEY>`
    /// environment variables override both (see `scoped`).
    pub fn load_config_files(&mut self) -> Result<()> {
        let files: Vec<(String, String)> = self
            .values
            .iter()
            .filter_map(|(k, v)| {
                k.strip_suffix(".config_file")
                    .map(|name| (name.to_string(), v.clone()))
            })
            .collect();
        for (name, path) in files {
            let path = self.scoped(&name, "config_file").unwrap_or(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| VeloError::Config(format!("'{name}.config_file' = '{path}': {e}")))?;
            let docs = yaml_rust2::YamlLoader::load_from_str(&text)
                .map_err(|e| VeloError::Config(format!("{path}: {e}")))?;
            let mut keys = BTreeMap::new();
            if let Some(doc) = docs.first() {
                flatten_yaml("", doc, &mut keys)
                    .map_err(|e| VeloError::Config(format!("{path}: {e}")))?;
            }
            for (key, value) in keys {
                let key = format!("{name}.{key}");
                if !self.values.contains_key(&key) {
                    let origin = KeyOrigin::File {
                        path: path.clone(),
                        config_file_key: format!("{name}.config_file"),
                    };
                    self.insert_at(key, value, origin);
                }
            }
        }
        Ok(())
    }
}

/// Flattens a YAML map into dotted keys with scalar values.
fn flatten_yaml(
    prefix: &str,
    node: &yaml_rust2::Yaml,
    out: &mut BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    use yaml_rust2::Yaml;
    let key = |k: &Yaml| match k {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        other => Err(format!("a key must be text, got {other:?}")),
    };
    match node {
        Yaml::Hash(map) => {
            for (k, v) in map {
                let k = key(k)?;
                let full = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_yaml(&full, v, out)?;
            }
            Ok(())
        }
        Yaml::Null if prefix.is_empty() => Ok(()),
        Yaml::String(s) | Yaml::Real(s) => {
            out.insert(prefix.to_string(), s.clone());
            Ok(())
        }
        Yaml::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
            Ok(())
        }
        Yaml::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
            Ok(())
        }
        other => Err(format!(
            "'{prefix}' must be a text, number or boolean, got {other:?}"
        )),
    }
}

/// A duration of at least a millisecond (a time between checkpoints), parsed as
/// [`parse_duration_ms`] does.
pub fn parse_positive_duration(text: &str) -> Option<std::time::Duration> {
    parse_duration_ms(text)
        .filter(|ms| *ms > 0)
        .map(|ms| std::time::Duration::from_millis(ms as u64))
}

/// Parses a duration such as `5s`, `100ms`, `10m`, `1h`, `1d` or `INTERVAL '5' SECOND` to ms.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let t = text.trim().trim_matches('\'').trim();
    let lower = t.to_lowercase();
    if let Some(rest) = lower.strip_prefix("interval") {
        let mut parts = rest.split_whitespace();
        let n: i64 = parts.next()?.trim_matches('\'').trim().parse().ok()?;
        let unit = parts.next()?;
        let ms = match unit.trim_end_matches('s') {
            "millisecond" => 1,
            "second" => 1_000,
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            _ => return None,
        };
        return n.checked_mul(ms);
    }
    let split = lower.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = lower.split_at(split);
    let n: i64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "second" | "seconds" => 1_000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_keys_layer_under_sql_keys_and_env() {
        let dir = std::env::temp_dir().join(format!("velo-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("kafka.yaml");
        std::fs::write(
            &file,
            "bootstrap:\n  servers: file:9092\ngroup.id: from-file\nsession.timeout.ms: 6000\ntopic.name: t1\n",
        )
        .expect("yaml");
        let mut props = Properties::default();
        props.insert("cfgsrc.config_file", file.display().to_string());
        props.insert("cfgsrc.group.id", "from-sql");
        props.load_config_files().expect("loads");
        assert_eq!(
            props.scoped("cfgsrc", "bootstrap.servers").as_deref(),
            Some("file:9092")
        );
        assert_eq!(
            props.scoped("cfgsrc", "group.id").as_deref(),
            Some("from-sql")
        );
        assert_eq!(
            props.scoped("cfgsrc", "session.timeout.ms").as_deref(),
            Some("6000")
        );
        std::env::set_var("VELOSTREAM_CFGSRC_TOPIC_NAME", "from-env");
        assert_eq!(
            props.scoped("cfgsrc", "topic.name").as_deref(),
            Some("from-env")
        );
        std::env::remove_var("VELOSTREAM_CFGSRC_TOPIC_NAME");

        let mut missing = Properties::default();
        missing.insert("x.config_file", "/nonexistent/velo.yaml");
        let err = missing.load_config_files().expect_err("no such file");
        assert!(err.to_string().contains("x.config_file"), "{err}");
        std::fs::write(&file, "a: [1, 2\n").expect("bad yaml");
        let mut bad = Properties::default();
        bad.insert("y.config_file", file.display().to_string());
        assert!(bad.load_config_files().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms("100ms"), Some(100));
        assert_eq!(parse_duration_ms("INTERVAL '1' MINUTE"), Some(60_000));
        assert_eq!(parse_duration_ms("'2h'"), Some(7_200_000));
        assert_eq!(parse_duration_ms("abc"), None);
    }
}
