//! Retention: which snapshots a policy keeps, and why. A pure function of the snapshots, the
//! policy and the time zone — no store, no clock — so every rule is a table test.
//!
//! Semantics follow restic's `forget`: snapshots are taken newest first; `keep_last` keeps the
//! n newest; `keep_daily` (weekly, monthly, yearly) keeps the newest snapshot of each of the n
//! newest days (ISO weeks, months, years) that have one, the calendar read in the configured
//! time zone; `keep_within` keeps everything within that long of the newest snapshot. A
//! snapshot kept by several rules lists every reason. Whatever the policy, the newest snapshot
//! is always kept.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

/// How many snapshots to keep, by rule. `None`/0: the rule keeps nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_within: Option<chrono::Duration>,
}

impl Policy {
    /// The ERPNext operator's practice: 7 daily, 4 weekly, 6 monthly.
    pub fn erpnext_default() -> Policy {
        Policy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            ..Policy::default()
        }
    }

    /// Whether the policy keeps anything beyond the always-kept newest snapshot.
    pub fn keeps_something(&self) -> bool {
        self.keep_last > 0
            || self.keep_daily > 0
            || self.keep_weekly > 0
            || self.keep_monthly > 0
            || self.keep_yearly > 0
            || self
                .keep_within
                .is_some_and(|d| d > chrono::Duration::zero())
    }
}

/// A complete snapshot to decide about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    /// The full snapshots its differential streams need (none for a snapshot of fulls).
    pub bases: Vec<String>,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Newest,
    Last(u32),
    /// The bucket, e.g. `2026-11-23`, `2026-W47`, `2026-11`, `2026`.
    Daily(String),
    Weekly(String),
    Monthly(String),
    Yearly(String),
    Within,
    /// The full a kept snapshot's differential needs: never deleted under it.
    Base(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Newest => write!(f, "newest snapshot"),
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Daily(b) => write!(f, "daily {b}"),
            Reason::Weekly(b) => write!(f, "weekly {b}"),
            Reason::Monthly(b) => write!(f, "monthly {b}"),
            Reason::Yearly(b) => write!(f, "yearly {b}"),
            Reason::Within => write!(f, "within keep_within"),
            Reason::Base(of) => write!(f, "base of {of}"),
        }
    }
}

/// The decision for every candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Kept snapshots, newest first, with their reasons.
    pub keep: Vec<(String, Vec<Reason>)>,
    /// Snapshots to delete, newest first.
    pub prune: Vec<String>,
}

/// A calendar rule: how many buckets, the bucket of a local time, and its reason.
type Rule = (u32, fn(DateTime<Tz>) -> String, fn(String) -> Reason);

/// Decides which `snapshots` `policy` keeps, reading the calendar in `tz`.
pub fn plan(snapshots: &[Candidate], policy: &Policy, tz: Tz) -> Plan {
    let mut sorted: Vec<&Candidate> = snapshots.iter().collect();
    // Newest first; equal times by id, so the result never depends on the input order.
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let newest = sorted.first().map(|c| c.time);
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); sorted.len()];
    if !sorted.is_empty() {
        reasons[0].push(Reason::Newest);
    }
    for (i, r) in reasons
        .iter_mut()
        .enumerate()
        .take(policy.keep_last as usize)
    {
        r.push(Reason::Last(i as u32 + 1));
    }
    let rules: [Rule; 4] = [
        (
            policy.keep_daily,
            |t| format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Reason::Daily,
        ),
        (
            policy.keep_weekly,
            |t| {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            },
            Reason::Weekly,
        ),
        (
            policy.keep_monthly,
            |t| format!("{:04}-{:02}", t.year(), t.month()),
            Reason::Monthly,
        ),
        (
            policy.keep_yearly,
            |t| format!("{:04}", t.year()),
            Reason::Yearly,
        ),
    ];
    for (count, bucket, reason) in rules {
        let mut last: Option<String> = None;
        let mut kept = 0;
        for (i, c) in sorted.iter().enumerate() {
            if kept >= count {
                break;
            }
            let b = bucket(c.time.with_timezone(&tz));
            if last.as_ref() != Some(&b) {
                reasons[i].push(reason(b.clone()));
                last = Some(b);
                kept += 1;
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.keep_within, newest) {
        for (i, c) in sorted.iter().enumerate() {
            if newest - c.time <= within {
                reasons[i].push(Reason::Within);
            }
        }
    }
    // A kept differential keeps its base, so every kept snapshot stays restorable (a base is
    // a full: it needs nothing itself).
    for i in 0..sorted.len() {
        if reasons[i].is_empty() || reasons[i].iter().all(|r| matches!(r, Reason::Base(_))) {
            continue;
        }
        for base in &sorted[i].bases {
            if let Some(j) = sorted.iter().position(|c| &c.id == base) {
                reasons[j].push(Reason::Base(sorted[i].id.clone()));
            }
        }
    }
    let mut out = Plan::default();
    for (c, r) in sorted.iter().zip(reasons) {
        if r.is_empty() {
            out.prune.push(c.id.clone());
        } else {
            out.keep.push((c.id.clone(), r));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC: Tz = chrono_tz::UTC;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NAIROBI: Tz = chrono_tz::Africa::Nairobi;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Snapshots named by their UTC time.
    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: (*t).to_string(),
                time: at(t),
                bases: Vec::new(),
            })
            .collect()
    }

    /// One a day at 02:00 UTC, `days` days ending on `last` (YYYY-MM-DD).
    fn daily(last: &str, days: i64) -> Vec<Candidate> {
        let end = at(&format!("{last}T02:00:00Z"));
        (0..days)
            .map(|d| {
                let t = end - chrono::Duration::days(d);
                Candidate {
                    id: t.format("%Y-%m-%dT%H:%M").to_string(),
                    time: t,
                    bases: Vec::new(),
                }
            })
            .collect()
    }

    fn kept(plan: &Plan) -> Vec<&str> {
        plan.keep.iter().map(|(id, _)| id.as_str()).collect()
    }

    fn reasons_of(plan: &Plan, id: &str) -> Vec<String> {
        plan.keep
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, r)| r.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn policy(last: u32, d: u32, w: u32, m: u32, y: u32) -> Policy {
        Policy {
            keep_last: last,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_yearly: y,
            keep_within: None,
        }
    }

    struct Case {
        name: &'static str,
        snapshots: Vec<Candidate>,
        policy: Policy,
        tz: Tz,
        keep: Vec<&'static str>,
    }

    #[test]
    fn retention_table() {
        let cases = vec![
            Case {
                name: "no snapshots: nothing to do",
                snapshots: vec![],
                policy: Policy::erpnext_default(),
                tz: UTC,
                keep: vec![],
            },
            Case {
                name: "one snapshot is the newest, kept whatever the policy",
                snapshots: snaps(&["2026-11-23T02:00:00Z"]),
                policy: Policy::default(),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z"],
            },
            Case {
                name: "an empty policy keeps only the newest",
                snapshots: snaps(&["2026-11-22T02:00:00Z", "2026-11-23T02:00:00Z"]),
                policy: Policy::default(),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z"],
            },
            Case {
                name: "keep_last 2 of 4",
                snapshots: snaps(&[
                    "2026-11-20T02:00:00Z",
                    "2026-11-21T02:00:00Z",
                    "2026-11-22T02:00:00Z",
                    "2026-11-23T02:00:00Z",
                ]),
                policy: policy(2, 0, 0, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z", "2026-11-22T02:00:00Z"],
            },
            Case {
                name: "keep_last larger than what exists keeps all",
                snapshots: snaps(&["2026-11-22T02:00:00Z", "2026-11-23T02:00:00Z"]),
                policy: policy(10, 0, 0, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z", "2026-11-22T02:00:00Z"],
            },
            Case {
                name: "several a day: daily keeps the newest of each day",
                snapshots: snaps(&[
                    "2026-11-22T02:00:00Z",
                    "2026-11-22T14:00:00Z",
                    "2026-11-23T02:00:00Z",
                    "2026-11-23T14:00:00Z",
                ]),
                policy: policy(0, 2, 0, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T14:00:00Z", "2026-11-22T14:00:00Z"],
            },
            Case {
                name: "daily counts days that have a snapshot, not calendar days (gaps)",
                snapshots: snaps(&[
                    "2026-11-01T02:00:00Z",
                    "2026-11-10T02:00:00Z",
                    "2026-11-20T02:00:00Z",
                    "2026-11-23T02:00:00Z",
                ]),
                policy: policy(0, 3, 0, 0, 0),
                tz: UTC,
                keep: vec![
                    "2026-11-23T02:00:00Z",
                    "2026-11-20T02:00:00Z",
                    "2026-11-10T02:00:00Z",
                ],
            },
            Case {
                name: "the day is read in the time zone: 23:30 UTC is the next day in Nairobi",
                snapshots: snaps(&["2026-11-22T20:00:00Z", "2026-11-22T23:30:00Z"]),
                policy: policy(0, 2, 0, 0, 0),
                tz: NAIROBI,
                keep: vec!["2026-11-22T23:30:00Z", "2026-11-22T20:00:00Z"],
            },
            Case {
                name: "the same two in UTC are one day",
                snapshots: snaps(&["2026-11-22T20:00:00Z", "2026-11-22T23:30:00Z"]),
                policy: policy(0, 2, 0, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-22T23:30:00Z"],
            },
            Case {
                name: "weekly uses ISO weeks: Sunday and the next Monday are two weeks",
                snapshots: snaps(&["2026-11-22T12:00:00Z", "2026-11-23T12:00:00Z"]),
                policy: policy(0, 0, 2, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T12:00:00Z", "2026-11-22T12:00:00Z"],
            },
            Case {
                name: "weekly: Monday to Sunday of one ISO week is one bucket",
                snapshots: snaps(&["2026-11-16T12:00:00Z", "2026-11-22T12:00:00Z"]),
                policy: policy(0, 0, 2, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-22T12:00:00Z"],
            },
            Case {
                name: "ISO week across the new year: 2026-12-31 and 2027-01-01 share W53",
                snapshots: snaps(&["2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z"]),
                policy: policy(0, 0, 2, 0, 0),
                tz: UTC,
                keep: vec!["2027-01-01T12:00:00Z"],
            },
            Case {
                name: "monthly keeps the newest of each month across a year boundary",
                snapshots: snaps(&[
                    "2026-11-30T02:00:00Z",
                    "2026-12-15T02:00:00Z",
                    "2026-12-31T02:00:00Z",
                    "2027-01-01T02:00:00Z",
                ]),
                policy: policy(0, 0, 0, 3, 0),
                tz: UTC,
                keep: vec![
                    "2027-01-01T02:00:00Z",
                    "2026-12-31T02:00:00Z",
                    "2026-11-30T02:00:00Z",
                ],
            },
            Case {
                name: "month boundary in the time zone: 23:30 UTC on 31 Oct is November in Berlin",
                snapshots: snaps(&["2026-10-31T12:00:00Z", "2026-10-31T23:30:00Z"]),
                policy: policy(0, 0, 0, 2, 0),
                tz: BERLIN,
                keep: vec!["2026-10-31T23:30:00Z", "2026-10-31T12:00:00Z"],
            },
            Case {
                name: "yearly keeps the newest of each year",
                snapshots: snaps(&[
                    "2024-06-01T02:00:00Z",
                    "2025-03-01T02:00:00Z",
                    "2025-12-31T02:00:00Z",
                    "2026-11-23T02:00:00Z",
                ]),
                policy: policy(0, 0, 0, 0, 2),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z", "2025-12-31T02:00:00Z"],
            },
            Case {
                name: "new year in the time zone: 23:30 UTC on 31 Dec is next year in Berlin",
                snapshots: snaps(&["2026-12-31T12:00:00Z", "2026-12-31T23:30:00Z"]),
                policy: policy(0, 0, 0, 0, 2),
                tz: BERLIN,
                keep: vec!["2026-12-31T23:30:00Z", "2026-12-31T12:00:00Z"],
            },
            Case {
                name: "DST ends (Berlin, 25 Oct 2026): 23:30 local on the 24th and the 25th",
                snapshots: snaps(&["2026-10-24T21:30:00Z", "2026-10-25T22:30:00Z"]),
                policy: policy(0, 2, 0, 0, 0),
                tz: BERLIN,
                keep: vec!["2026-10-25T22:30:00Z", "2026-10-24T21:30:00Z"],
            },
            Case {
                name: "DST ends: 22:30 UTC on 25 Oct is still 25 Oct in Berlin (UTC+1 now)",
                snapshots: snaps(&["2026-10-25T00:30:00Z", "2026-10-25T22:30:00Z"]),
                policy: policy(0, 2, 0, 0, 0),
                tz: BERLIN,
                keep: vec!["2026-10-25T22:30:00Z"],
            },
            Case {
                name: "DST starts (Berlin, 29 Mar 2026): 22:30 UTC on 29 Mar is 30 Mar (UTC+2)",
                snapshots: snaps(&["2026-03-29T12:00:00Z", "2026-03-29T22:30:00Z"]),
                policy: policy(0, 2, 0, 0, 0),
                tz: BERLIN,
                keep: vec!["2026-03-29T22:30:00Z", "2026-03-29T12:00:00Z"],
            },
            Case {
                name: "rules overlap: last 1 + daily 2 + weekly 3 (Monday 23 Nov)",
                snapshots: daily("2026-11-23", 14),
                policy: policy(1, 2, 3, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T02:00", "2026-11-22T02:00", "2026-11-15T02:00"],
            },
            Case {
                name: "the ERPNext default over 400 daily snapshots: 7 + 4 weekly + 6 monthly",
                snapshots: daily("2026-11-23", 400),
                policy: Policy::erpnext_default(),
                tz: UTC,
                keep: vec![
                    "2026-11-23T02:00",
                    "2026-11-22T02:00",
                    "2026-11-21T02:00",
                    "2026-11-20T02:00",
                    "2026-11-19T02:00",
                    "2026-11-18T02:00",
                    "2026-11-17T02:00",
                    "2026-11-15T02:00",
                    "2026-11-08T02:00",
                    "2026-10-31T02:00",
                    "2026-09-30T02:00",
                    "2026-08-31T02:00",
                    "2026-07-31T02:00",
                    "2026-06-30T02:00",
                ],
            },
            Case {
                name: "keep_within 3 days of the newest (not of now)",
                snapshots: daily("2026-11-23", 10),
                policy: Policy {
                    keep_within: Some(chrono::Duration::days(3)),
                    ..Policy::default()
                },
                tz: UTC,
                keep: vec![
                    "2026-11-23T02:00",
                    "2026-11-22T02:00",
                    "2026-11-21T02:00",
                    "2026-11-20T02:00",
                ],
            },
            Case {
                name: "keep_within with one old snapshot keeps it (within of the newest)",
                snapshots: daily("2020-01-01", 1),
                policy: Policy {
                    keep_within: Some(chrono::Duration::days(3)),
                    ..Policy::default()
                },
                tz: UTC,
                keep: vec!["2020-01-01T02:00"],
            },
            Case {
                name: "equal times are ordered by id, whatever the input order",
                snapshots: vec![
                    Candidate {
                        id: "a".into(),
                        time: at("2026-11-23T02:00:00Z"),
                        bases: Vec::new(),
                    },
                    Candidate {
                        id: "b".into(),
                        time: at("2026-11-23T02:00:00Z"),
                        bases: Vec::new(),
                    },
                ],
                policy: policy(1, 0, 0, 0, 0),
                tz: UTC,
                keep: vec!["b"],
            },
            Case {
                name: "daily 1 after a gap keeps only the newest day",
                snapshots: snaps(&["2026-01-01T02:00:00Z", "2026-11-23T02:00:00Z"]),
                policy: policy(0, 1, 0, 0, 0),
                tz: UTC,
                keep: vec!["2026-11-23T02:00:00Z"],
            },
            Case {
                name: "monthly with several months missing counts existing months",
                snapshots: snaps(&[
                    "2026-01-15T02:00:00Z",
                    "2026-05-15T02:00:00Z",
                    "2026-11-15T02:00:00Z",
                ]),
                policy: policy(0, 0, 0, 2, 0),
                tz: UTC,
                keep: vec!["2026-11-15T02:00:00Z", "2026-05-15T02:00:00Z"],
            },
            Case {
                name: "leap day is its own day",
                snapshots: snaps(&[
                    "2028-02-28T12:00:00Z",
                    "2028-02-29T12:00:00Z",
                    "2028-03-01T12:00:00Z",
                ]),
                policy: policy(0, 3, 0, 0, 0),
                tz: UTC,
                keep: vec![
                    "2028-03-01T12:00:00Z",
                    "2028-02-29T12:00:00Z",
                    "2028-02-28T12:00:00Z",
                ],
            },
        ];
        assert!(cases.len() >= 25, "{} cases", cases.len());
        for c in cases {
            let p = plan(&c.snapshots, &c.policy, c.tz);
            assert_eq!(kept(&p), c.keep, "{}", c.name);
            // Everything is decided once: kept + pruned = all.
            assert_eq!(
                p.keep.len() + p.prune.len(),
                c.snapshots.len(),
                "{}",
                c.name
            );
            if let Some((first, reasons)) = p.keep.first() {
                assert!(reasons.contains(&Reason::Newest), "{}: {first}", c.name);
            }
        }
    }

    #[test]
    fn reasons_name_every_rule_that_keeps_a_snapshot() {
        let p = plan(&daily("2026-11-23", 40), &policy(1, 7, 4, 6, 1), UTC);
        assert_eq!(
            reasons_of(&p, "2026-11-23T02:00"),
            [
                "newest snapshot",
                "last 1",
                "daily 2026-11-23",
                "weekly 2026-W48",
                "monthly 2026-11",
                "yearly 2026"
            ]
        );
        assert_eq!(reasons_of(&p, "2026-11-15T02:00"), ["weekly 2026-W46"]);
        assert_eq!(reasons_of(&p, "2026-10-31T02:00"), ["monthly 2026-10"]);
        assert!(p.prune.contains(&"2026-11-14T02:00".to_string()));
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_recognised() {
        assert!(!Policy::default().keeps_something());
        assert!(Policy::erpnext_default().keeps_something());
        assert!(
            !Policy {
                keep_within: Some(chrono::Duration::zero()),
                ..Policy::default()
            }
            .keeps_something()
        );
    }
    #[test]
    fn a_kept_differential_keeps_its_base() {
        let mut c = snaps(&[
            "2026-11-01T02:00:00Z",
            "2026-11-02T02:00:00Z",
            "2026-11-03T02:00:00Z",
        ]);
        // The newest is a differential against the first, a full.
        c[2].bases = vec![c[0].id.clone()];
        let p = plan(&c, &policy(1, 0, 0, 0, 0), UTC);
        assert_eq!(kept(&p), ["2026-11-03T02:00:00Z", "2026-11-01T02:00:00Z"]);
        assert_eq!(
            reasons_of(&p, "2026-11-01T02:00:00Z"),
            ["base of 2026-11-03T02:00:00Z"]
        );
        assert_eq!(p.prune, ["2026-11-02T02:00:00Z"]);
    }

    #[test]
    fn a_hundred_and_twenty_days_of_pruning_never_loses_a_kept_snapshots_base() {
        // One backup a day, a full every 7 days, the others differentials against the last
        // full; prune after each with the default policy, as the daemon does.
        let start = at("2026-01-01T02:00:00Z");
        let mut store: Vec<Candidate> = Vec::new();
        let mut last_full = String::new();
        for day in 0..120 {
            let time = start + chrono::Duration::days(day);
            let id = time.format("%Y-%m-%dT%H:%M").to_string();
            let bases = if day % 7 == 0 {
                last_full = id.clone();
                Vec::new()
            } else {
                vec![last_full.clone()]
            };
            store.push(Candidate { id, time, bases });
            let p = plan(&store, &Policy::erpnext_default(), BERLIN);
            store.retain(|c| !p.prune.contains(&c.id));
            for c in &store {
                for b in &c.bases {
                    assert!(
                        store.iter().any(|k| &k.id == b),
                        "day {day}: {} kept without its base {b}",
                        c.id
                    );
                }
            }
            assert_eq!(
                store.iter().map(|c| c.time).max(),
                Some(time),
                "the newest is kept"
            );
        }
        // What is left: the policy's 7 + 4 + 6 at most, plus the bases they pin.
        let pinned_only = store
            .iter()
            .filter(|c| {
                let p = plan(&store, &Policy::erpnext_default(), BERLIN);
                reasons_of(&p, &c.id)
                    .iter()
                    .all(|r| r.starts_with("base of "))
            })
            .count();
        assert!(pinned_only > 0, "some fulls are kept only as bases");
        assert!(store.len() <= 17 + pinned_only, "{}", store.len());
    }
}
