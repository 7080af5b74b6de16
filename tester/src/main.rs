//! `tester`: stress, cache and propagation tests of a running cluster. Not written yet.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("tester: not implemented yet; see README.md (Status)");
    ExitCode::from(2)
}
