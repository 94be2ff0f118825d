//! Integration tests: the real binary against `riskbatch sim` on loopback.

mod commands;
mod end_to_end;
mod faults;
mod harness;
mod integrity;
mod rank;
mod receive;
mod reports;
mod resume;
mod soak;
mod tokens;
