//! Runs the `.slt` conformance suite (tests/slt/*.slt).

mod common;

#[test]
fn slt_suite_single_partition() {
    common::run_slt_suite(1);
}

#[test]
fn slt_suite_four_partitions() {
    common::run_slt_suite(4);
}
