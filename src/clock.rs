//! Wall-clock timestamps: milliseconds since the Unix epoch, shown in ISO 8601 UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-23T09:12:00.123Z`, the form SPEC §4 gives for every timestamp.
/// Written out by hand: it is formatted for every row of the outputs, and
/// chrono's strftime parsing took 1.3 % of a run's CPU.
pub fn iso_ms(millis: i64) -> String {
    let mut out = String::with_capacity(24);
    push_iso_ms(&mut out, millis);
    out
}

/// [`iso_ms`] appended to `out`, which the outputs reuse for every row;
/// nothing is appended for a year outside 0–9999.
pub fn push_iso_ms(out: &mut String, millis: i64) {
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return;
    }
    let secs = ms_of_day / 1000;
    // Digit by digit: `write!` took 2,190 instructions per timestamp
    // (callgrind), and results.csv has one or two per row.
    let fields = [
        (year as u32, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        ((secs / 3600) as u32, 2, b':'),
        ((secs / 60 % 60) as u32, 2, b':'),
        ((secs % 60) as u32, 2, b'.'),
        ((ms_of_day % 1000) as u32, 3, b'Z'),
    ];
    for (value, width, separator) in fields {
        let mut divisor = 10u32.pow(width - 1);
        while divisor > 0 {
            out.push(char::from(b'0' + (value / divisor % 10) as u8));
            divisor /= 10;
        }
        out.push(char::from(separator));
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_milliseconds_and_z() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_795_425_120_123), "2026-11-23T09:12:00.123Z");
        assert_eq!(iso_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn agrees_with_chrono_day_by_day() {
        for day in (-719_000i64..2_932_000).step_by(37) {
            let millis = day * 86_400_000 + (day.rem_euclid(86_400)) * 1000 + 7;
            let expected = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(iso_ms(millis), expected, "{millis}");
        }
    }
}
