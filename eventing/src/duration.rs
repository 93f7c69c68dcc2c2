//! ISO-8601 durations as used by the Knative delivery spec (`backoffDelay`, `timeout`,
//! `retryAfterMax`), e.g. `PT1S`, `PT0.5S`, `PT10M`, `P1DT2H`.

use std::time::Duration;

/// Error parsing an ISO-8601 duration: the offending input and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ISO-8601 duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text that failed to parse.
    pub input: String,
    /// Why it failed.
    pub reason: &'static str,
}

/// Parses an ISO-8601 duration (`PnYnMnWnDTnHnMnS`, fractions allowed on any component) into a
/// [`Duration`].
///
/// Years count as 365 days and months as 30 days (Knative's Go parser uses the same
/// approximation; delivery durations never use them in practice). Negative durations are
/// rejected.
///
/// # Errors
/// [`DurationError`] when the text is not of that form (missing `P`, a number without a unit,
/// a unit out of order, `T` without a time component, ...).
pub fn parse_iso8601(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(|| err("must start with P"))?;
    if rest.is_empty() {
        return Err(err("no components"));
    }
    let mut secs = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    let mut components = 0;
    // Units in order; a unit must come after the previous one.
    let mut last_rank = 0u8;
    for ch in rest.chars() {
        match ch {
            '0'..='9' | '.' | ',' => number.push(if ch == ',' { '.' } else { ch }),
            'T' | 't' => {
                if in_time || !number.is_empty() {
                    return Err(err("misplaced T"));
                }
                in_time = true;
            }
            _ => {
                if number.is_empty() {
                    return Err(err("unit without a number"));
                }
                let value: f64 = number.parse().map_err(|_| err("bad number"))?;
                number.clear();
                let (rank, unit_secs) = match (in_time, ch.to_ascii_uppercase()) {
                    (false, 'Y') => (1, 365.0 * 86_400.0),
                    (false, 'M') => (2, 30.0 * 86_400.0),
                    (false, 'W') => (3, 7.0 * 86_400.0),
                    (false, 'D') => (4, 86_400.0),
                    (true, 'H') => (5, 3_600.0),
                    (true, 'M') => (6, 60.0),
                    (true, 'S') => (7, 1.0),
                    _ => return Err(err("unknown unit")),
                };
                if rank <= last_rank {
                    return Err(err("units out of order"));
                }
                last_rank = rank;
                components += 1;
                secs += value * unit_secs;
            }
        }
    }
    if !number.is_empty() {
        return Err(err("number without a unit"));
    }
    if components == 0 || (in_time && last_rank < 5) {
        return Err(err("no components"));
    }
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(err("out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_knative_examples() {
        assert_eq!(parse_iso8601("PT1S").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_iso8601("PT0.2S").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_iso8601("PT10M").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_iso8601("PT1H30M").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_iso8601("P1DT1S").unwrap(),
            Duration::from_secs(86_401)
        );
        assert_eq!(
            parse_iso8601("P2W").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "P", "PT", "1S", "PT1", "PTS", "PT1M1H", "P1H", "PT1D", "5s", "P1DT",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad} should fail");
        }
    }
}
