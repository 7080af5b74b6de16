//! `layer2-relay`: the relay node binary. The server is not written yet.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("layer2-relay: the relay server is not implemented yet; see README.md (Status)");
    ExitCode::from(2)
}
