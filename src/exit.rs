//! Exit codes (SPEC §5) and the one error type that picks a non-default code.

use std::fmt;

/// The process exit codes of SPEC §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run is complete (or already was).
    Complete = 0,
    /// The run failed: WeChat refused credentials or permission, or an unexpected error.
    Failed = 1,
    /// Usage, job file, credentials or input file: found before any API call.
    Usage = 2,
    /// Paused and resumable (limits, quota, balance, signal, another process).
    Paused = 75,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Marks an error as the user's to fix before anything runs (exit 2).
///
/// Wrap it in `anyhow` with `.context()` freely: [`exit_for`] looks through
/// the chain.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds an exit-2 error from a message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The exit code an error maps to.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    if err.chain().any(|cause| cause.is::<UsageError>()) {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// An error's message with its causes, and what to do when the cause is the
/// disk or the file system rather than riskbatch.
pub fn describe(err: &anyhow::Error) -> String {
    let message = format!("{err:#}");
    let io = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>());
    let hint = match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::StorageFull) => {
            " — the disk is full: make room and run again (every finished row is kept)"
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            " — this user may not write there: fix the permissions or choose another folder"
        }
        Some(std::io::ErrorKind::ReadOnlyFilesystem) => {
            " — the file system is read-only: choose another folder"
        }
        _ => "",
    };
    format!("{message}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn usage_errors_keep_their_code_through_context() {
        let err = Err::<(), _>(usage("bad key"))
            .context("reading jobs/x.toml")
            .unwrap_err();
        assert_eq!(exit_for(&err), Exit::Usage);
        assert_eq!(format!("{err:#}"), "reading jobs/x.toml: bad key");
        assert_eq!(exit_for(&anyhow::anyhow!("boom")), Exit::Failed);
    }
}
