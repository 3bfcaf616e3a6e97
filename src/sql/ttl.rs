//! `'state.ttl'`: how long a GROUP BY keeps a key that receives no records.

use super::properties::parse_duration_ms;
use super::Properties;
use crate::error::{Result, VeloError};

/// Which clock measures a key's idle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlClock {
    /// The job's watermark (event time), the default.
    Event,
    /// Wall-clock time.
    Processing,
}

/// A GROUP BY's state time-to-live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtl {
    /// A key is dropped once its clock has passed its last update by this much.
    pub ttl_ms: i64,
    pub clock: TtlClock,
}

impl StateTtl {
    /// How far the clock moves between two sweeps for idle keys: an eighth of the TTL, so a key
    /// goes between 1 and 1⅛ TTLs after its last update.
    pub fn sweep_every_ms(&self) -> i64 {
        (self.ttl_ms / 8).max(1)
    }
}

/// Reads `'state.ttl'` and `'state.ttl.clock'` (None: no TTL).
pub fn state_ttl_settings(props: &Properties) -> Result<Option<StateTtl>> {
    let clock = match props.get("state.ttl.clock") {
        None | Some("event") | Some("event_time") => TtlClock::Event,
        Some("processing") | Some("processing_time") => TtlClock::Processing,
        Some(other) => {
            return Err(VeloError::Config(format!(
                "'state.ttl.clock' = '{other}': expected event (the default) or processing"
            )))
        }
    };
    let Some(text) = props.get("state.ttl") else {
        if props.get("state.ttl.clock").is_some() {
            return Err(VeloError::Config(
                "'state.ttl.clock' is set without 'state.ttl' (e.g. 'state.ttl' = '1h')".into(),
            ));
        }
        return Ok(None);
    };
    let ttl_ms = parse_duration_ms(text)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            VeloError::Config(format!(
                "'state.ttl' = '{text}' is not a positive duration (e.g. 30m or 1h)"
            ))
        })?;
    Ok(Some(StateTtl { ttl_ms, clock }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::default();
        for (k, v) in pairs {
            p.insert(*k, *v);
        }
        p
    }

    #[test]
    fn a_ttl_is_read_on_event_time_unless_the_clock_says_processing() {
        assert_eq!(state_ttl_settings(&props(&[])).expect("none"), None);
        let ttl = state_ttl_settings(&props(&[("state.ttl", "1h")])).expect("ttl");
        assert_eq!(
            ttl,
            Some(StateTtl {
                ttl_ms: 3_600_000,
                clock: TtlClock::Event
            })
        );
        let wall = state_ttl_settings(&props(&[
            ("state.ttl", "30s"),
            ("state.ttl.clock", "processing"),
        ]))
        .expect("ttl");
        assert_eq!(wall.map(|t| t.clock), Some(TtlClock::Processing));
        assert_eq!(wall.map(|t| t.sweep_every_ms()), Some(3_750));
    }

    #[test]
    fn bad_ttl_settings_name_the_key() {
        for (pairs, needle) in [
            (vec![("state.ttl", "soon")], "'state.ttl' = 'soon'"),
            (vec![("state.ttl", "0s")], "positive duration"),
            (
                vec![("state.ttl", "1h"), ("state.ttl.clock", "wall")],
                "expected event (the default) or processing",
            ),
            (
                vec![("state.ttl.clock", "processing")],
                "without 'state.ttl'",
            ),
        ] {
            let err = state_ttl_settings(&props(&pairs)).expect_err("refused");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
