//! Sizes as people read them, the same wherever they appear (API problems, emails, the web page).

/// `bytes` in SI units (1 KB = 1000 bytes, as in the web page's `formatBytes`,
/// `functions/gateway/web/app.js`): `"999 bytes"`, `"241 KB"`, `"3.0 MB"`, `"2.1 GB"`; one decimal below
/// 10 of a unit, none above.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut n = bytes as f64;
    let mut unit = 0;
    while n >= 1000.0 && unit < UNITS.len() - 1 {
        n /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ if n < 10.0 => format!("{n:.1} {}", UNITS[unit]),
        _ => format!("{n:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_on_the_web_page() {
        assert_eq!(human_bytes(999), "999 bytes");
        assert_eq!(human_bytes(241_495), "241 KB");
        assert_eq!(human_bytes(1_000_000), "1.0 MB");
        assert_eq!(human_bytes(3_000_000), "3.0 MB");
        assert_eq!(human_bytes(2_147_483_648), "2.1 GB");
    }
}
