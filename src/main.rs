//! The `riskbatch` binary: everything lives in the library so that tests can
//! drive it in-process too; this file only hands over the arguments.

fn main() -> std::process::ExitCode {
    riskbatch::run(std::env::args_os())
}
