//! Snapshot ids: `YYYYMMDDTHHMMSSZ-xxxxxx`, UTC start time first, so they sort by time.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{MANIFEST_NAME, SIGNATURE_NAME, SNAPSHOTS_PREFIX, SnapshotError};

/// A snapshot id: `YYYYMMDDTHHMMSSZ-xxxxxx` (UTC time, 6 random hex digits); ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A fresh id for a snapshot started at `now`. The first three hex digits encode the
    /// fraction of the second (in 1/4096 s), the last three are random, so ids sort by start
    /// time even within one second.
    pub fn new(now: DateTime<Utc>) -> Self {
        let fraction = u64::from(now.timestamp_subsec_nanos()) * 4096 / 1_000_000_000;
        let random = u64::from(rand::random::<u16>() & 0xfff);
        SnapshotId(format!(
            "{}-{:03x}{:03x}",
            now.format("%Y%m%dT%H%M%SZ"),
            fraction,
            random
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key prefix of this snapshot's objects, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("{SNAPSHOTS_PREFIX}{}/", self.0)
    }

    /// The key of one object of this snapshot.
    pub fn key(&self, name: &str) -> String {
        format!("{SNAPSHOTS_PREFIX}{}/{name}", self.0)
    }

    /// The key of this snapshot's manifest.
    pub fn manifest_key(&self) -> String {
        self.key(MANIFEST_NAME)
    }

    /// The key of this snapshot's manifest signature.
    pub fn signature_key(&self) -> String {
        self.key(SIGNATURE_NAME)
    }

    /// The start time encoded in the id (whole seconds, UTC): what retention and staleness
    /// go by, since a manifest's own times are only as good as its consistency with it.
    pub fn time(&self) -> DateTime<Utc> {
        parse_id_time(&self.0).expect("a SnapshotId holds a valid time")
    }

    /// The start time encoded in the id.
    pub fn started(&self) -> Option<SystemTime> {
        Some(self.time().into())
    }
}

fn parse_id_time(id: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for SnapshotId {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 23
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            && parse_id_time(s).is_some();
        if ok {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(SnapshotError::BadId(s.to_string()))
        }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = SnapshotError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = SnapshotId::new("2026-11-23T02:00:00Z".parse().unwrap());
        let b = SnapshotId::new("2026-11-23T02:00:00.001Z".parse().unwrap());
        let c = SnapshotId::new("2026-11-23T02:00:00.999Z".parse().unwrap());
        assert!(b < c, "ids sort within a second");
        assert!(a.as_str().starts_with("20261123T020000Z-"));
        assert_eq!(a.as_str().parse::<SnapshotId>().unwrap(), a);
        assert!(a < b);
        for bad in [
            "latest",
            "20261123T020000Z",
            "20261123T020000Z-ABCDEF",
            "../../x",
        ] {
            assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
        }
    }
}
