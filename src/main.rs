//! The `riskbatch` binary: everything lives in the library so that tests can
//! drive it in-process too; this file only hands over the arguments.

// glibc's allocator spent about a tenth of the simulator's time in
// `_int_malloc` and much of the runner's in frees across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    riskbatch::run(std::env::args_os())
}
