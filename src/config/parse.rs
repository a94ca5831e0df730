//! Parsers for the settings that are not plain strings or numbers: comma lists, `key=value`
//! maps, Kubernetes CPU and memory quantities, and the original service's Go durations and
//! booleans. Used as clap value parsers, so a bad value is
//! reported at start-up, naming its variable, and the rest of the service only sees typed values.

use std::collections::BTreeMap;
use std::time::Duration;

/// A comma list: `a,b , c` -> `["a", "b", "c"]` (empty entries dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

/// `k=v,k2=v2` as a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map(pub BTreeMap<String, String>);

pub fn list(s: &str) -> Result<List, String> {
    Ok(List(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()))
}

/// An entry without `=` (or with an empty key) is an error.
pub fn map(s: &str) -> Result<Map, String> {
    let List(entries) = list(s)?;
    let pairs = entries.into_iter().map(|kv| match kv.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got {kv:?}")),
    });
    Ok(Map(pairs.collect::<Result<_, _>>()?))
}

/// One toleration of sandbox pods: tolerates taints with this key (and value, when given) and
/// effect (every effect when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub value: Option<String>,
    pub effect: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tolerations(pub Vec<Toleration>);

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `key[=value][:Effect],...`, the way `kubectl taint` writes a taint, one toleration each.
pub fn tolerations(s: &str) -> Result<Tolerations, String> {
    let List(entries) = list(s)?;
    let one = |entry: String| {
        let (selector, effect) = match entry.rsplit_once(':') {
            Some((selector, effect)) if TAINT_EFFECTS.contains(&effect.trim()) => {
                (selector.trim(), Some(effect.trim().to_string()))
            }
            Some(_) => {
                return Err(format!(
                    "{entry:?}: the effect after ':' must be one of {}",
                    TAINT_EFFECTS.join(", ")
                ));
            }
            None => (entry.as_str(), None),
        };
        let (key, value) = match selector.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (selector, None),
        };
        if key.is_empty() {
            return Err(format!("{entry:?}: a toleration needs a key (key[=value][:Effect])"));
        }
        Ok(Toleration { key: key.to_string(), value, effect })
    };
    Ok(Tolerations(entries.into_iter().map(one).collect::<Result<_, _>>()?))
}

/// `"1"`, `"1.5"`, `"500m"` -> millicores.
pub fn millicores(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let value = match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map_err(|_| format!("invalid CPU quantity {s:?}"))?,
        None => s.parse::<f64>().map_err(|_| format!("invalid CPU quantity {s:?}"))? * 1000.0,
    };
    positive(value, s)
}

/// `"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"` -> bytes.
pub fn bytes(s: &str) -> Result<u64, String> {
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

/// A Go duration (`30s`, `15m`, `1h30m`, `1.5h`, `300ms`), as the original service's duration
/// settings are written; negative durations are refused.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    let nanos = go_parse_duration::parse_duration(s.trim())
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 30s, 15m, 1h30m)"))?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("duration {s:?} must not be negative"))
}

/// A boolean as Go's `strconv.ParseBool` reads it (`1`, `t`, `true`, `TRUE`, `0`, `f`, ...).
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?} (expected true or false)")),
    }
}

fn positive(value: f64, original: &str) -> Result<u64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value.round() as u64)
    } else {
        Err(format!("quantity {original:?} must be positive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_maps() {
        assert_eq!(list(" a, ,b ").unwrap().0, ["a", "b"]);
        let m = map("x=1, y = two,z=").unwrap().0;
        assert_eq!(m["x"], "1");
        assert_eq!(m["y"], "two");
        assert_eq!(m["z"], "");
        assert!(map("novalue").is_err());
        assert!(map("=v").is_err());
        assert!(map("").unwrap().0.is_empty());
    }

    #[test]
    fn tolerations_are_written_as_kubectl_writes_taints() {
        let t = tolerations("runtime-api.test/real-node=true:NoSchedule, dedicated, gpu:NoExecute")
            .unwrap()
            .0;
        let expect = |key: &str, value: Option<&str>, effect: Option<&str>| Toleration {
            key: key.into(),
            value: value.map(String::from),
            effect: effect.map(String::from),
        };
        assert_eq!(
            t,
            [
                expect("runtime-api.test/real-node", Some("true"), Some("NoSchedule")),
                expect("dedicated", None, None),
                expect("gpu", None, Some("NoExecute")),
            ]
        );
        assert!(tolerations("").unwrap().0.is_empty());
        assert!(tolerations("key:Sometimes").unwrap_err().contains("NoSchedule"));
        assert!(tolerations("=v:NoSchedule").unwrap_err().contains("needs a key"));
    }

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(millicores("1"), Ok(1000));
        assert_eq!(millicores("1.5"), Ok(1500));
        assert_eq!(millicores("250m"), Ok(250));
        assert!(millicores("lots").is_err());
        assert!(millicores("0").is_err());
        assert_eq!(bytes("2Gi"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(bytes("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1000"), Ok(1000));
        assert!(bytes("2Zi").is_err());
    }

    #[test]
    fn go_durations_and_booleans() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(go_duration("30").is_err(), "Go requires a unit");
        assert!(go_duration("-1s").is_err());
        assert!(go_duration("soon").is_err());
        assert_eq!(go_bool("TRUE"), Ok(true));
        assert_eq!(go_bool("f"), Ok(false));
        assert!(go_bool("yes").is_err());
    }
}
