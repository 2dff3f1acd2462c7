//! Calendar dates (`YYYY-MM-DD`, UTC) for the org policy's dated rules: `enforce_from` on a gate
//! or a forbidden command, and the expiry of a waiver.
//!
//! The core never reads the clock. Which day it is comes from the edge (the CLI's `--today`,
//! else the system clock read in `main`; the webhook worker's clock, per job) as an
//! [`Evaluation`], and is passed down to validation. Without a day (`today: None`), every dated
//! rule is enforced and no waiver applies: the strict reading.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Pattern of a date in the org policy.
pub const DATE_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$";

/// A day of the proleptic Gregorian calendar, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Date {
    /// The date of year, month (1–12) and day (1–31); `None` when there is no such day.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || !(1..=9999).contains(&y) {
            return None;
        }
        i32::try_from(days_from_civil(y, m, d)).ok().map(Date)
    }

    /// Parses `YYYY-MM-DD`; `None` for anything else, or a day that does not exist.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |s: &str| -> Option<u32> {
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())
                .flatten()
        };
        let y = i32::try_from(num(&text[..4])?).ok()?;
        Date::from_ymd(y, num(&text[5..7])?, num(&text[8..])?)
    }

    /// The UTC day of a Unix time in seconds (the edge reads the clock and calls this).
    pub fn from_unix_seconds(secs: i64) -> Date {
        Date(i32::try_from(secs.div_euclid(86_400)).unwrap_or(i32::MAX))
    }

    /// Year, month and day.
    pub fn ymd(self) -> (i64, i64, i64) {
        // Howard Hinnant's `civil_from_days`.
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        i64::from(later.0) - i64::from(self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        Date::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a YYYY-MM-DD date")))
    }
}

/// The circumstances a manifest is validated in, besides the manifest and the org: which day it
/// is (dated rules, waiver expiry) and which repository the manifest comes from (waivers by
/// repository). Both come from the edge; the default knows neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Today (UTC); `None`: every dated rule is enforced and no waiver applies.
    pub today: Option<Date>,
    /// The repository (`owner/name`) the manifest comes from, when known; waivers that name
    /// repositories apply only when it is.
    pub repository: Option<String>,
}

impl Evaluation {
    /// An evaluation on `today`, repository unknown.
    pub fn on(today: Date) -> Evaluation {
        Evaluation {
            today: Some(today),
            repository: None,
        }
    }

    /// The same evaluation for `repository`.
    pub fn for_repository(mut self, repository: Option<&str>) -> Evaluation {
        self.repository = repository.map(str::to_owned);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_print_and_compare() {
        for text in [
            "1970-01-01",
            "2000-02-29",
            "2026-03-01",
            "2026-12-31",
            "9999-12-31",
        ] {
            let d = Date::parse(text).expect(text);
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(Date::parse("1970-01-01"), Some(Date(0)));
        assert_eq!(
            Date::parse("2026-03-01")
                .expect("d")
                .days_until(Date::parse("2026-02-27").expect("d")),
            -2
        );
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "26-04-01",
            "2026/04/01",
            "2026-4-01",
            "+026-04-01",
            "2026-04-0x",
            "",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert!(Date::parse("2026-03-01") < Date::parse("2026-03-02"));
        assert_eq!(
            Date::from_unix_seconds(1_772_323_200).to_string(),
            "2026-03-01"
        );
        assert_eq!(Date::from_unix_seconds(-1).to_string(), "1969-12-31");
    }
}
