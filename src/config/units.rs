//! Sizes (`64MiB`) and durations (`26h`) in a config.

use std::time::Duration;

/// Splits `64MiB` / `26 h` into the number and the unit.
fn number_and_unit<'s>(s: &'s str, what: &str) -> Result<(u64, &'s str), String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num.parse().map_err(|_| format!("'{s}' is not {what}"))?;
    Ok((n, unit.trim()))
}

/// Parses `64MiB`, `1 GiB`, `512KiB`, `1000000`, `10MB`.
///
/// # Errors
/// A message naming the value and the accepted units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s, "a size such as 64MiB")?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses `90s`, `30m`, `26h`, `7d`.
///
/// # Errors
/// A message naming the value and the accepted units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration such as 26h")?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(format!("'{s}': unknown unit '{other}' (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}
