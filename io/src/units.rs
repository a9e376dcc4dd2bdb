//! Byte sizes and durations as the command line and the config file spell them.

use std::time::Duration;

/// Parses a byte count: a plain integer (`65536`), or one with a binary suffix `B`, `KiB`, `MiB`
/// or `GiB` (case-insensitive, a space allowed before it: `4MiB`, `256 kib`). Decimal units
/// (`KB`, `MB`) are refused rather than guessed at.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid size {s:?}: a size cannot be negative"));
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a byte count such as 65536, 256KiB or 4MiB"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let unit_size: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {:?} (use B, KiB, MiB or GiB)",
                unit.trim()
            ))
        }
    };
    n.checked_mul(unit_size)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Parses a duration in humantime's notation: `250ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim().starts_with('-') {
        return Err(format!(
            "invalid duration {s:?}: a duration cannot be negative (write e.g. 250ms, 5s or 2m)"
        ));
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 250ms, 5s or 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_plain_numbers_and_binary_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("12B"), Ok(12));
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64 kib"), Ok(64 * 1024));
        assert_eq!(parse_size(" 1mib "), Ok(1 << 20));
    }

    #[test]
    fn sizes_refuse_garbage_decimal_units_and_overflow() {
        for bad in [
            "",
            "MiB",
            "4MB",
            "4KB",
            "1.5MiB",
            "-1",
            "12 parsecs",
            "99999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_size("4MB").unwrap_err().contains("KiB"));
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_size("-1").unwrap_err().contains("negative"));
    }
}
