//! Just enough of Kubernetes resource quantities to scale CPU and memory by `resource_factor`,
//! written the way the API server writes them back (parsing is in `config::parse`).

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
