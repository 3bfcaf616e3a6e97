//! A duration whose milliseconds do not fit in 64 bits (`10000000000000000d`, from a WITH key,
//! an annotation or `--checkpoint-interval`) is rejected as not a duration, instead of
//! overflowing (a panic in debug builds, a wrapped negative value in release).

use velostream::sql::properties::parse_duration_ms;

#[test]
fn durations_too_long_for_milliseconds_are_rejected() {
    assert_eq!(parse_duration_ms("10000000000000000d"), None);
    assert_eq!(
        parse_duration_ms("INTERVAL '200000000000000000' HOUR"),
        None
    );
    assert_eq!(
        parse_duration_ms("106751991167d"),
        Some(106_751_991_167 * 86_400_000)
    );
}

#[test]
fn the_cli_names_a_checkpoint_interval_too_long() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_velo-sql"))
        .args([
            "deploy-app",
            "--file",
            "examples/kafka_app.sql",
            "--brokers",
            "127.0.0.1:1",
        ])
        .args([
            "--state-dir",
            "target/never-used",
            "--checkpoint-interval",
            "10000000000000000d",
        ])
        .output()
        .expect("velo-sql runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--checkpoint-interval"), "{stderr}");
}
