//! The protobuf `Report`, one a day, and the month names used as record keys.

use time::{Date, Month};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/weather.rs"));
}

pub use generated::Report;

/// Every calendar month in order, as they are keyed on the topic.
pub const MONTHS: [Month; 12] = [
    Month::January,
    Month::February,
    Month::March,
    Month::April,
    Month::May,
    Month::June,
    Month::July,
    Month::August,
    Month::September,
    Month::October,
    Month::November,
    Month::December,
];

/// The English name of a month: the record key, and the key in partition files.
pub fn month_name(month: Month) -> &'static str {
    match month {
        Month::January => "January",
        Month::February => "February",
        Month::March => "March",
        Month::April => "April",
        Month::May => "May",
        Month::June => "June",
        Month::July => "July",
        Month::August => "August",
        Month::September => "September",
        Month::October => "October",
        Month::November => "November",
        Month::December => "December",
    }
}

/// The month an English name stands for, exactly as `month_name` writes it.
pub fn parse_month(name: &str) -> Option<Month> {
    MONTHS.into_iter().find(|m| month_name(*m) == name)
}

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Parses an ISO date, `YYYY-MM-DD`, the only form a `Report` carries.
pub fn parse_date(text: &str) -> Result<Date, time::error::Parse> {
    Date::parse(text, DATE_FORMAT)
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    // The format has no component that can fail for a valid `Date` in years 0..=9999.
    date.format(DATE_FORMAT)
        .unwrap_or_else(|_| format!("{date}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_proto_contract() {
        let report = Report {
            date: "2000-03-01".into(),
            degrees: 44.5,
        };
        let bytes = report.encode_to_vec();
        // Field 1, wire type 2 (length-delimited): tag byte 0x0a, then the 10-byte date.
        assert_eq!(&bytes[..2], &[0x0a, 10]);
        assert_eq!(&bytes[2..12], b"2000-03-01");
        // Field 2, wire type 1 (64-bit): tag byte 0x11, then the little-endian double.
        assert_eq!(bytes[12], 0x11);
        assert_eq!(&bytes[13..], &44.5f64.to_le_bytes());
        assert_eq!(Report::decode(bytes.as_slice()).unwrap(), report);
    }

    #[test]
    fn month_names_round_trip() {
        for month in MONTHS {
            assert_eq!(parse_month(month_name(month)), Some(month));
        }
        assert_eq!(parse_month("march"), None);
    }

    #[test]
    fn dates_round_trip_and_reject_other_forms() {
        let date = parse_date("2000-02-29").unwrap();
        assert_eq!(format_date(date), "2000-02-29");
        assert!(parse_date("2001-02-29").is_err());
        assert!(parse_date("2000-2-3").is_err());
        assert!(parse_date("yesterday").is_err());
    }
}
