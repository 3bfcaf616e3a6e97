//! Runs the `.slt` conformance suite (tests/slt/*.slt).

mod common;

#[test]
fn slt_suite_single_partition() {
    common::run_slt_suite(1);
}
