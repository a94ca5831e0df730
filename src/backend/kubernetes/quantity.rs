//! Just enough of Kubernetes resource quantities to scale CPU and memory by `resource_factor`.

/// `"1"`, `"1.5"`, `"500m"` -> millicores.
pub fn parse_millicores(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let value = match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map_err(|_| format!("invalid CPU quantity {s:?}"))?,
        None => s.parse::<f64>().map_err(|_| format!("invalid CPU quantity {s:?}"))? * 1000.0,
    };
    positive(value, s)
}

/// `"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"` -> bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    const SUFFIXES: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|n| (n, *mult)))
        .unwrap_or((s, 1.0));
    let value =
        number.parse::<f64>().map_err(|_| format!("invalid memory quantity {s:?}"))? * multiplier;
    positive(value, s)
}

fn positive(value: f64, original: &str) -> Result<u64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value.round() as u64)
    } else {
        Err(format!("quantity {original:?} must be positive"))
    }
}

/// Millicores scaled by `factor`, as the API server writes it back (`2`, `1500m`), so specs
/// compare equal before and after a round trip.
pub fn cpu(millis: u64, factor: f64) -> String {
    let scaled = ((millis as f64) * factor).round().max(1.0) as u64;
    if scaled % 1000 == 0 { (scaled / 1000).to_string() } else { format!("{scaled}m") }
}

/// Bytes scaled by `factor`, in the largest exact binary unit (`8Gi`, `1536Mi`).
pub fn memory(bytes: u64, factor: f64) -> String {
    let scaled = ((bytes as f64) * factor).round().max(1.0) as u64;
    const UNITS: [(&str, u64); 4] =
        [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    UNITS
        .iter()
        .find(|(_, size)| scaled % size == 0)
        .map(|(unit, size)| format!("{}{unit}", scaled / size))
        .unwrap_or_else(|| scaled.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(parse_millicores("1"), Ok(1000));
        assert_eq!(parse_millicores("1.5"), Ok(1500));
        assert_eq!(parse_millicores("250m"), Ok(250));
        assert!(parse_millicores("lots").is_err());
        assert!(parse_millicores("0").is_err());
        assert_eq!(parse_bytes("2Gi"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("2Zi").is_err());
    }

    #[test]
    fn scales_by_factor() {
        assert_eq!(cpu(1000, 1.0), "1");
        assert_eq!(cpu(1000, 2.0), "2");
        assert_eq!(cpu(1000, 0.5), "500m");
        assert_eq!(cpu(1000, 1.5), "1500m");
        assert_eq!(memory(2 * 1073741824, 4.0), "8Gi");
        assert_eq!(memory(2 * 1073741824, 0.75), "1536Mi");
        assert_eq!(memory(2 * 1073741824, 0.3), "644245094");
    }
}
