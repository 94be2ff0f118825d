//! A row's outcome: the values of the `risk_*` output columns (SPEC §4).

use serde::Serialize;

/// `risk_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Ok = 0,
    InvalidInput = 1,
    InvalidOpenid = 2,
    OpenidExpired = 3,
    NotLoggedIn = 4,
    ParamError = 5,
    /// Retries ran out (or an unlisted answer): tried again on the next invocation.
    Failed = 6,
    /// Not decided yet; only in partial reports of an unfinished run.
    Pending = 7,
}

impl RowStatus {
    pub const ALL: [RowStatus; 8] = [
        RowStatus::Ok,
        RowStatus::InvalidInput,
        RowStatus::InvalidOpenid,
        RowStatus::OpenidExpired,
        RowStatus::NotLoggedIn,
        RowStatus::ParamError,
        RowStatus::Failed,
        RowStatus::Pending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Ok => "ok",
            RowStatus::InvalidInput => "invalid_input",
            RowStatus::InvalidOpenid => "invalid_openid",
            RowStatus::OpenidExpired => "openid_expired",
            RowStatus::NotLoggedIn => "not_logged_in",
            RowStatus::ParamError => "param_error",
            RowStatus::Failed => "failed",
            RowStatus::Pending => "pending",
        }
    }

    pub fn from_code(code: i64) -> Option<RowStatus> {
        RowStatus::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// A final outcome is never retried; `failed` and `pending` rows are.
    pub fn is_final(self) -> bool {
        !matches!(self, RowStatus::Failed | RowStatus::Pending)
    }
}

/// `risk_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSource {
    Api = 0,
    Cache = 1,
    Duplicate = 2,
    Allowlist = 3,
    Denylist = 4,
}

impl RiskSource {
    pub const ALL: [RiskSource; 5] = [
        RiskSource::Api,
        RiskSource::Cache,
        RiskSource::Duplicate,
        RiskSource::Allowlist,
        RiskSource::Denylist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskSource::Api => "api",
            RiskSource::Cache => "cache",
            RiskSource::Duplicate => "duplicate",
            RiskSource::Allowlist => "allowlist",
            RiskSource::Denylist => "denylist",
        }
    }

    pub fn from_code(code: i64) -> Option<RiskSource> {
        RiskSource::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

/// Why an invocation stopped early with the run resumable (`pause_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    MaxChunks,
    Deadline,
    DailyQuota,
    InsufficientBalance,
    Interrupted,
    /// The rank API's test quota is used up (9410009).
    TestQuota,
    /// Every row was tried, but some ran out of retries; the next invocation tries them again.
    FailedRows,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::MaxChunks => "max_chunks",
            PauseReason::Deadline => "deadline",
            PauseReason::DailyQuota => "daily_quota",
            PauseReason::InsufficientBalance => "insufficient_balance",
            PauseReason::Interrupted => "interrupted",
            PauseReason::TestQuota => "test_quota",
            PauseReason::FailedRows => "failed_rows",
        }
    }
}

/// `risk_label` for a level.
pub fn label(level: u8) -> &'static str {
    match level {
        0 => "none",
        1 => "low",
        2 => "medium",
        3 => "high",
        _ => "very_high",
    }
}

/// What the API (or a list, or the cache) said about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: RowStatus,
    pub level: Option<u8>,
    pub errcode: Option<i32>,
    pub code: Option<i32>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub checked_at: i64,
}

impl Answer {
    /// An outcome decided locally, with no API answer behind it.
    pub fn local(status: RowStatus, level: Option<u8>, message: Option<String>, at: i64) -> Answer {
        Answer {
            status,
            level,
            errcode: None,
            code: None,
            message,
            request_id: None,
            checked_at: at,
        }
    }
}

/// One row's outcome as stored and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    /// `risk_source_row`: 1 for the first data row.
    pub row: u64,
    pub answer: Answer,
    pub source: Option<RiskSource>,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for status in RowStatus::ALL {
            assert_eq!(RowStatus::from_code(status as i64), Some(status));
        }
        for source in RiskSource::ALL {
            assert_eq!(RiskSource::from_code(source as i64), Some(source));
        }
        assert_eq!(RowStatus::from_code(99), None);
        assert!(!RowStatus::Failed.is_final() && RowStatus::OpenidExpired.is_final());
    }
}
