//! Moments in time as husk keeps them: [`Timestamp`], a UTC instant with nanosecond precision.
//!
//! Records, API views and drivers hold a `Timestamp` and compare, subtract and convert it; only at the edges
//! (JSON, the CLI, another runtime's API) does it become text. Its text is RFC 3339 in UTC with nine fractional
//! digits and `Z` (`2024-05-01T12:00:00.000000001Z`), which is what husk has always stored and served.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A moment in UTC, to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(DateTime::<Utc>::UNIX_EPOCH);

    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp(Utc::now())
    }

    /// The moment `nanos` nanoseconds after the Unix epoch (before it when negative).
    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(DateTime::from_timestamp_nanos(nanos))
    }

    /// The moment `secs` seconds and `nanos` nanoseconds after the Unix epoch, as protobuf and `stat` give it;
    /// None when it is out of range.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        DateTime::from_timestamp(secs, nanos).map(Timestamp)
    }

    /// Nanoseconds since the Unix epoch (negative before it; saturates beyond the years 1677 and 2262).
    pub fn unix_nanos(self) -> i64 {
        self.0
            .timestamp_nanos_opt()
            .unwrap_or(if self.0.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            })
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0.timestamp()
    }

    /// The nanoseconds within the second, 0 to 999 999 999.
    pub fn subsec_nanos(self) -> u32 {
        self.0.timestamp_subsec_nanos()
    }

    /// Reads an RFC 3339 time with any offset and converts it to UTC.
    pub fn parse(text: &str) -> Result<Timestamp> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| Error::bad_request(format!("{text:?} is not an RFC 3339 time: {e}")))
    }

    /// How long after `earlier` this moment is; zero when it is not after it.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        (self.0 - earlier.0).to_std().unwrap_or_default()
    }

    /// This moment as chrono sees it, to format it some other way.
    pub fn to_chrono(self) -> DateTime<Utc> {
        self.0
    }
}

impl Default for Timestamp {
    /// The Unix epoch, so that records can derive `Default` (tests build them field by field).
    fn default() -> Timestamp {
        Timestamp::UNIX_EPOCH
    }
}

impl std::ops::Sub for Timestamp {
    type Output = chrono::TimeDelta;

    /// The signed time from `earlier` to this moment.
    fn sub(self, earlier: Timestamp) -> chrono::TimeDelta {
        self.0 - earlier.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Timestamp {
        Timestamp(t)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Timestamp {
        Timestamp(t.into())
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with nine fractional digits and `Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Nanos, true))
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(text: &str) -> Result<Timestamp> {
        Timestamp::parse(text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Serde for an `Option<Timestamp>` field that is `""` when not set, as husk's records always wrote it: None is
/// written as `""`, and `""`, `null` or (with `#[serde(default)]`) a missing field read as None.
///
/// ```ignore
/// #[serde(default, with = "husk_core::time::optional")]
/// pub started_at: Option<Timestamp>,
/// ```
pub mod optional {
    use super::*;

    /// Writes the time, or `""` for None.
    pub fn serialize<S: Serializer>(
        value: &Option<Timestamp>,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.collect_str(t),
            None => serializer.serialize_str(""),
        }
    }

    /// Reads a time, or None from `""` or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Option<Timestamp>, D::Error> {
        let text = Option::<std::borrow::Cow<str>>::deserialize(deserializer)?;
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => Timestamp::parse(text)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        created_at: Timestamp,
        #[serde(default, with = "optional")]
        started_at: Option<Timestamp>,
        #[serde(default, with = "optional", skip_serializing_if = "Option::is_none")]
        finished_at: Option<Timestamp>,
    }

    #[test]
    fn text_round_trip_keeps_nanoseconds() {
        let t = Timestamp::parse("2024-05-01T12:00:00.123456789Z").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:00:00.123456789Z");
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert_eq!(t.subsec_nanos(), 123_456_789);
    }

    #[test]
    fn display_is_what_husk_always_wrote() {
        let now = chrono::Utc::now();
        assert_eq!(
            Timestamp::from(now).to_string(),
            now.to_rfc3339_opts(SecondsFormat::Nanos, true)
        );
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn unix_nanos_round_trip() {
        for nanos in [0, 1, 1_714_564_800_123_456_789, -1_500_000_000] {
            assert_eq!(Timestamp::from_unix_nanos(nanos).unix_nanos(), nanos);
        }
        let t = Timestamp::parse("2024-05-01T12:00:00.5Z").unwrap();
        assert_eq!(t.unix_nanos(), 1_714_564_800_500_000_000);
        assert_eq!(t.unix_seconds(), 1_714_564_800);
        assert_eq!(Timestamp::from_unix(1_714_564_800, 500_000_000), Some(t));
    }

    #[test]
    fn ordering_and_durations() {
        let a = Timestamp::from_unix_nanos(1_000);
        let b = Timestamp::from_unix_nanos(2_500);
        assert!(a < b);
        assert_eq!(a.max(b), b);
        assert_eq!(b.duration_since(a), Duration::from_nanos(1_500));
        assert_eq!(a.duration_since(b), Duration::ZERO);
        assert!(Timestamp::now() > Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn an_offset_is_converted_to_utc() {
        let t = Timestamp::parse("2024-05-01T14:30:00.000000007+02:30").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:00:00.000000007Z");
        assert_eq!(
            t,
            Timestamp::parse("2024-05-01T12:00:00.000000007Z").unwrap()
        );
    }

    #[test]
    fn a_bad_string_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "0001-01-01 00:00:00",
        ] {
            let e = Timestamp::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains("RFC 3339"), "{}", e.message);
        }
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn json_is_the_rfc3339_string() {
        let t = Timestamp::parse("2024-05-01T12:00:00.000000001Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-05-01T12:00:00.000000001Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn optional_none_is_the_empty_string() {
        let created = Timestamp::parse("2024-05-01T12:00:00Z").unwrap();
        let r = Record {
            created_at: created,
            started_at: None,
            finished_at: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"created_at":"2024-05-01T12:00:00.000000000Z","started_at":""}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        let started = Record {
            started_at: Some(created),
            finished_at: Some(created),
            ..r
        };
        let json = serde_json::to_string(&started).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), started);
    }

    #[test]
    fn old_records_read_back() {
        let old =
            r#"{"created_at":"2023-01-02T03:04:05.678901234Z","started_at":"","finished_at":""}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!(r.created_at.to_string(), "2023-01-02T03:04:05.678901234Z");
        assert_eq!(r.started_at, None);
        assert_eq!(r.finished_at, None);
        let missing: Record =
            serde_json::from_str(r#"{"created_at":"2023-01-02T03:04:05Z"}"#).unwrap();
        assert_eq!(missing.started_at, None);
        let null: Record =
            serde_json::from_str(r#"{"created_at":"2023-01-02T03:04:05Z","started_at":null}"#)
                .unwrap();
        assert_eq!(null.started_at, None);
        assert!(
            serde_json::from_str::<Record>(r#"{"created_at":"2023","started_at":""}"#).is_err()
        );
    }
}
