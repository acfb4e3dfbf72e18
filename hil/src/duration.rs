//! Durations in files and on the command line: a number and a unit, `250ms`, `5s`, `2m`, `1h`.

/// Milliseconds in `text`, or a message saying what is accepted.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("{text:?} has no unit; write it as 250ms, 5s, 2m or 1h")),
        other => return Err(format!("{text:?}: unknown unit {other:?}; expected ms, s, m or h")),
    };
    let n: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a whole number with a unit, such as 5s"))?;
    n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too long"))
}

/// `ms` as the shortest exact text: `1500ms`, `5s`, `2m`.
pub fn format_ms(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("301s"), Ok(301_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("5").unwrap_err(), "\"5\" has no unit; write it as 250ms, 5s, 2m or 1h");
        assert_eq!(
            parse_duration_ms("5 days").unwrap_err(),
            "\"5 days\": unknown unit \"days\"; expected ms, s, m or h"
        );
        assert!(parse_duration_ms("-5s").is_err());
        assert_eq!(format_ms(301_000), "301s");
        assert_eq!(format_ms(1_500), "1500ms");
    }
}
