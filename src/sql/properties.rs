//! `WITH ('<name>.<key>' = 'value', ...)` properties, looked up per source or sink name.

use std::collections::BTreeMap;

use crate::error::{Result, VeloError};

/// The WITH keys of one statement (plus CLI bindings), as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    values: BTreeMap<String, String>,
}

impl Properties {
    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// Adds every key of `other` that is not set here.
    pub fn merge_missing(&mut self, other: &Properties) {
        for (k, v) in &other.values {
            self.values.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// The raw value of a full key such as `late.data.strategy`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `<name>.<key>`; `VELOSTREAM_<NAME>_<KEY>` in the environment overrides it.
    pub fn scoped(&self, name: &str, key: &str) -> Option<String> {
        let env_key = format!("VELOSTREAM_{}_{}", name, key)
            .to_uppercase()
            .replace(['.', '-'], "_");
        if let Ok(v) = std::env::var(env_key) {
            return Some(v);
        }
        self.values.get(&format!("{name}.{key}")).cloned()
    }

    /// `<name>.<key>` parsed as a boolean.
    pub fn scoped_bool(&self, name: &str, key: &str) -> Result<Option<bool>> {
        match self.scoped(name, key) {
            None => Ok(None),
            Some(v) => match v.to_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(VeloError::Config(format!(
                    "'{name}.{key}' must be true or false, got '{v}'"
                ))),
            },
        }
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
        return Some(n * ms);
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
    Some(n * ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms("100ms"), Some(100));
        assert_eq!(parse_duration_ms("INTERVAL '1' MINUTE"), Some(60_000));
        assert_eq!(parse_duration_ms("'2h'"), Some(7_200_000));
        assert_eq!(parse_duration_ms("abc"), None);
    }
}
