//! `'state.ttl'`: how long a GROUP BY keeps a key that receives no records.

use super::key_spec::{KeyDefault, KeyKind, KeySpec, Keys};
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

/// `'state.ttl'`: how long a GROUP BY keeps an idle key.
pub const STATE_TTL: KeySpec = KeySpec {
    name: "state.ttl",
    kind: KeyKind::Duration { positive: true },
    default: KeyDefault::None,
    doc: "A GROUP BY without a window (or a join of two streams without time bounds) drops a key \
          that receives no records for this long; see [sql.md](sql.md#bounded-state-statettl).",
};

/// `'state.ttl.clock'`: which clock measures a key's idle time.
pub const STATE_TTL_CLOCK: KeySpec = KeySpec {
    name: "state.ttl.clock",
    kind: KeyKind::Choice(&["event", "processing", "event_time", "processing_time"]),
    default: KeyDefault::Value("event"),
    doc: "`event`: a key's idle time is measured on the watermark; `processing`: on the wall \
          clock. Needs `state.ttl`.",
};

/// Reads `'state.ttl'` and `'state.ttl.clock'` (None: no TTL).
pub fn state_ttl_settings(props: &Properties) -> Result<Option<StateTtl>> {
    let keys = Keys::job(props);
    let clock = match keys.choice(&STATE_TTL_CLOCK)? {
        None | Some("event" | "event_time") => TtlClock::Event,
        Some(_) => TtlClock::Processing,
    };
    let Some(ttl_ms) = keys.duration_ms(&STATE_TTL)? else {
        if keys.text(&STATE_TTL_CLOCK).is_some() {
            return Err(VeloError::Config(
                "'state.ttl.clock' is set without 'state.ttl' (e.g. 'state.ttl' = '1h')".into(),
            ));
        }
        return Ok(None);
    };
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
                "expected event, processing, event_time or processing_time",
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
