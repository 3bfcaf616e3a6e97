//! The job lease: one instance at a time runs a job whose state is in a shared state store.
//!
//! Instances of an app that share a `--state-dir` would otherwise each restore the job's whole
//! state, each read part of its topic, and write checkpoints over each other's. Instead the
//! first instance takes the job's lease, `_leases/<job>.json` in the store, and renews it
//! while it runs; the others wait as standbys, without joining the consumer group. When the
//! holder stops, or dies and its lease goes stale, a standby takes over: it restores the
//! latest checkpoint and gets every partition. So several instances give the answer one
//! gives, and a killed instance's work moves to another with nothing lost or doubled.
//!
//! Taking a stale lease deletes it and creates a new one with a create-if-absent write, so of
//! two standbys racing for it one wins. A holder that finds its lease taken stops at once.

use std::time::Duration;

use serde_json::{json, Value};

use super::StateStore;
use crate::error::{Result, VeloError};

/// Who holds a lease, and when they last renewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub owner: String,
    pub renewed_ms: i64,
}

/// What [`JobLease::try_acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This instance holds the lease now.
    Held,
    /// Another live instance does.
    HeldBy(LeaseRecord),
}

/// One job's lease, as one instance sees it.
pub struct JobLease {
    store: StateStore,
    path: String,
    owner: String,
    /// A lease not renewed for this long is stale.
    timeout: Duration,
    last_renewed_ms: Option<i64>,
}

impl JobLease {
    /// The lease of `job` in `store`, for the instance called `owner`.
    pub fn new(store: StateStore, job: &str, owner: &str, timeout: Duration) -> Self {
        JobLease {
            store,
            path: format!("_leases/{job}.json"),
            owner: owner.to_string(),
            timeout,
            last_renewed_ms: None,
        }
    }

    /// Where the lease lives, for messages.
    pub fn location(&self) -> String {
        format!("{}/{}", self.store.url(), self.path)
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }

    fn read(&self) -> Result<Option<LeaseRecord>> {
        let Some(bytes) = self.store.get(&self.path)? else {
            return Ok(None);
        };
        // A torn or foreign file is no lease: it is taken over once stale by its age.
        let parsed: Option<LeaseRecord> =
            serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
                Some(LeaseRecord {
                    owner: v.get("owner")?.as_str()?.to_string(),
                    renewed_ms: v.get("renewed_ms")?.as_i64()?,
                })
            });
        Ok(Some(parsed.unwrap_or(LeaseRecord {
            owner: String::new(),
            renewed_ms: 0,
        })))
    }

    fn record(&self, now_ms: i64) -> Vec<u8> {
        json!({ "owner": self.owner, "renewed_ms": now_ms })
            .to_string()
            .into_bytes()
    }

    /// Takes the lease at wall-clock `now_ms` if it is free, stale or already ours.
    pub fn try_acquire(&mut self, now_ms: i64) -> Result<Acquired> {
        match self.read()? {
            Some(held) if held.owner == self.owner => {}
            Some(held) if now_ms.saturating_sub(held.renewed_ms) < self.timeout_ms() => {
                return Ok(Acquired::HeldBy(held));
            }
            Some(stale) => {
                tracing::warn!(lease = %self.location(), holder = %stale.owner, "taking over a stale lease");
                self.store.delete(&self.path)?;
                if !self.store.put_new(&self.path, self.record(now_ms))? {
                    // Another standby took it first.
                    return self.read().map(|r| {
                        Acquired::HeldBy(r.unwrap_or(LeaseRecord {
                            owner: String::new(),
                            renewed_ms: now_ms,
                        }))
                    });
                }
                self.last_renewed_ms = Some(now_ms);
                return Ok(Acquired::Held);
            }
            None => {
                if !self.store.put_new(&self.path, self.record(now_ms))? {
                    return self.try_acquire(now_ms);
                }
                self.last_renewed_ms = Some(now_ms);
                return Ok(Acquired::Held);
            }
        }
        self.store.put(&self.path, self.record(now_ms))?;
        self.last_renewed_ms = Some(now_ms);
        Ok(Acquired::Held)
    }

    /// Renews the lease if a quarter of its timeout has passed since the last renewal; an
    /// error if another instance has taken it.
    pub fn renew(&mut self, now_ms: i64) -> Result<()> {
        if self
            .last_renewed_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < self.timeout_ms() / 4)
        {
            return Ok(());
        }
        match self.read()? {
            Some(held) if held.owner != self.owner => Err(VeloError::Execution(format!(
                "lost the lease {} to instance {} (this instance did not renew it within {:?}); \
                 stopping so that one instance runs the job",
                self.location(),
                held.owner,
                self.timeout
            ))),
            _ => {
                self.store.put(&self.path, self.record(now_ms))?;
                self.last_renewed_ms = Some(now_ms);
                Ok(())
            }
        }
    }

    /// Gives the lease up (a graceful stop), so a standby need not wait for it to go stale.
    pub fn release(&mut self) -> Result<()> {
        if let Some(held) = self.read()? {
            if held.owner == self.owner {
                self.store.delete(&self.path)?;
            }
        }
        self.last_renewed_ms = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dir: &std::path::Path, owner: &str) -> JobLease {
        let store = StateStore::open(dir.to_str().expect("path")).expect("store");
        JobLease::new(store, "totals", owner, Duration::from_secs(10))
    }

    #[test]
    fn one_instance_holds_the_lease_until_it_goes_stale_or_is_released() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut a, mut b) = (lease(dir.path(), "a"), lease(dir.path(), "b"));
        assert_eq!(a.try_acquire(1_000).expect("a"), Acquired::Held);
        assert!(matches!(
            b.try_acquire(5_000).expect("b"),
            Acquired::HeldBy(LeaseRecord { ref owner, renewed_ms: 1_000 }) if owner == "a"
        ));
        a.renew(4_000).expect("renewed");
        assert!(matches!(
            b.try_acquire(12_000).expect("b"),
            Acquired::HeldBy(_)
        ));
        // a stops renewing: 10 s after its last renewal b takes over, and a finds out.
        assert_eq!(b.try_acquire(14_000).expect("b"), Acquired::Held);
        let lost = a.renew(15_000).expect_err("a lost it").to_string();
        assert!(
            lost.contains("lost the lease") && lost.contains("instance b"),
            "{lost}"
        );
        b.release().expect("release");
        assert_eq!(a.try_acquire(15_001).expect("a"), Acquired::Held);
    }

    #[test]
    fn a_restarted_holder_takes_its_own_lease_back_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        lease(dir.path(), "a").try_acquire(1_000).expect("a");
        assert_eq!(
            lease(dir.path(), "a").try_acquire(1_500).expect("a"),
            Acquired::Held
        );
    }
}
