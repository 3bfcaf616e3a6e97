//! A job whose source goes idle must still commit the offsets of what it has finished: they
//! used to wait for the next record (or the job's stop), so an idle job showed false lag and a
//! crash re-read records long done.

mod kafka_support;

use std::time::{Duration, Instant};

use kafka_support::*;

#[test]
fn an_idle_job_commits_its_done_offsets() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 2), ("copy", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..1000);
        // Every record is read within the first commit interval; then the source is idle.
        let sql = source("g-idle").replace("'0s'", "'3s'")
            + "CREATE STREAM copy AS SELECT id FROM trades \
               WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let out = consume(&bootstrap, "copy", Duration::from_secs(60), |o| {
            o.len() >= 1000
        });
        assert_eq!(out.len(), 1000);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = 0;
        while Instant::now() < deadline {
            done = committed(&bootstrap, "g-idle-copy", "trades", 2);
            if done >= 1000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stop_app(stop, app);
        assert_eq!(done, 1000, "every offset committed while the job ran, idle");
    });
}
