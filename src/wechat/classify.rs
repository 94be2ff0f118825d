//! What a reply means for a batch caller: the tables of wechat-api.md §3 as one function.

use super::Reply;
use crate::outcome::{PauseReason, RowStatus};

/// The class of one answer of the risk endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Inner code 0: the row's risk level.
    Level(u8),
    /// A per-row verdict: the row ends with this status, no retry.
    Row(RowStatus),
    /// Transient: retry with backoff.
    Retry,
    /// 45011: retry, and lower the sending rate for a while.
    SlowDown,
    /// 40001, 40014, 42001: get a valid token, then retry.
    Token,
    /// A whole-run condition that ends when time passes or money is added.
    Pause(PauseReason),
    /// The run cannot go on; the message says what to fix.
    Fatal(String),
    /// An answer the documentation does not list: the row is `failed` and tried
    /// again on the next invocation.
    Unknown,
}

/// Classifies a parsed reply.
pub fn classify(reply: &Reply) -> Verdict {
    match reply.errcode {
        0 => classify_inner(reply),
        -1 | 9301002 | 9301003 => Verdict::Retry,
        40001 | 40014 | 42001 => Verdict::Token,
        45009 => Verdict::Pause(PauseReason::DailyQuota),
        45011 => Verdict::SlowDown,
        61010 => Verdict::Row(RowStatus::OpenidExpired),
        40003 => Verdict::Row(RowStatus::InvalidOpenid),
        47001 | 44002 | 9301001 => Verdict::Row(RowStatus::ParamError),
        43104 => Verdict::Row(RowStatus::InvalidOpenid),
        9410009 => Verdict::Pause(PauseReason::TestQuota),
        40129 => Verdict::Fatal(
            "WeChat answered 40129 (invalid scene): set `rank_scene` in the job file to \
             \"marketing\" or \"registration\", as the appid's rank service allows"
                .into(),
        ),
        48001 => Verdict::Fatal(
            "WeChat answered 48001: this appid is not authorised for the risk API; \
             apply for it (see wechat-api.md) or check appid_env"
                .into(),
        ),
        _ => Verdict::Unknown,
    }
}

fn classify_inner(reply: &Reply) -> Verdict {
    match reply.code {
        Some(0) => match reply.risklevel {
            Some(level @ 0..=3) => Verdict::Level(level as u8),
            Some(4) if reply.rank => Verdict::Level(4),
            // A success without a usable level is not an answer we can record.
            _ => Verdict::Retry,
        },
        Some(1) => Verdict::Row(RowStatus::ParamError),
        Some(2 | 11) => Verdict::Row(RowStatus::InvalidOpenid),
        Some(3) => Verdict::Fatal(
            "the risk service answered code 3: this product is not authorised for the appid; \
             apply for access (see wechat-api.md) or check appid_env"
                .into(),
        ),
        Some(4..=8 | 10) => Verdict::Retry,
        Some(9) => Verdict::Fatal(
            "the risk service answered code 9: serviceid is wrong for this api; \
             check `scene` in the job file"
                .into(),
        ),
        Some(12) => Verdict::Row(RowStatus::NotLoggedIn),
        Some(13) => Verdict::Pause(PauseReason::InsufficientBalance),
        _ => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer(errcode: i64) -> Reply {
        Reply {
            errcode,
            ..Reply::default()
        }
    }

    fn inner(code: i64) -> Reply {
        Reply {
            code: Some(code),
            risklevel: Some(2),
            ..Reply::default()
        }
    }

    #[test]
    fn outer_errcodes_follow_the_table() {
        use RowStatus::*;
        let table = [
            (-1, Verdict::Retry),
            (40001, Verdict::Token),
            (40014, Verdict::Token),
            (42001, Verdict::Token),
            (45009, Verdict::Pause(PauseReason::DailyQuota)),
            (45011, Verdict::SlowDown),
            (61010, Verdict::Row(OpenidExpired)),
            (40003, Verdict::Row(InvalidOpenid)),
            (47001, Verdict::Row(ParamError)),
            (44002, Verdict::Row(ParamError)),
            (9301001, Verdict::Row(ParamError)),
            (9301002, Verdict::Retry),
            (9301003, Verdict::Retry),
            (43104, Verdict::Row(InvalidOpenid)),
            (9410009, Verdict::Pause(PauseReason::TestQuota)),
            (12345, Verdict::Unknown),
        ];
        for (errcode, expected) in table {
            assert_eq!(classify(&outer(errcode)), expected, "errcode {errcode}");
        }
        assert!(matches!(classify(&outer(48001)), Verdict::Fatal(m) if m.contains("48001")));
        assert!(matches!(classify(&outer(40129)), Verdict::Fatal(m) if m.contains("rank_scene")));
        let rank = |level| Reply {
            code: Some(0),
            risklevel: Some(level),
            rank: true,
            ..Reply::default()
        };
        assert_eq!(classify(&rank(4)), Verdict::Level(4));
        assert_eq!(
            classify(&Reply {
                rank: false,
                ..rank(4)
            }),
            Verdict::Retry
        );
    }

    #[test]
    fn inner_codes_follow_the_table() {
        use RowStatus::*;
        let table = [
            (0, Verdict::Level(2)),
            (1, Verdict::Row(ParamError)),
            (2, Verdict::Row(InvalidOpenid)),
            (11, Verdict::Row(InvalidOpenid)),
            (12, Verdict::Row(NotLoggedIn)),
            (13, Verdict::Pause(PauseReason::InsufficientBalance)),
            (99, Verdict::Unknown),
        ];
        for (code, expected) in table {
            assert_eq!(classify(&inner(code)), expected, "code {code}");
        }
        for code in [4, 5, 6, 7, 8, 10] {
            assert_eq!(classify(&inner(code)), Verdict::Retry, "code {code}");
        }
        for code in [3, 9] {
            assert!(
                matches!(classify(&inner(code)), Verdict::Fatal(_)),
                "code {code}"
            );
        }
    }
}
