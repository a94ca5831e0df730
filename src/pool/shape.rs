//! Pool shapes: what a start request fixes in a sandbox's pod spec apart from its session and
//! environment. A warm member of a shape can serve any request of that shape, whatever its
//! environment, session key or webhooks, because those arrive later through `/api/init`.

use std::fmt;

use crate::runtime::{Command, RuntimeSpec};

/// The command the OpenHands SDK sends for its agent-server image (`APIRemoteWorkspace`).
pub const SDK_COMMAND: &str = "/usr/local/bin/openhands-agent-server --port 60000";
/// The SDK's user, group for files, and working directory.
pub const SDK_USER: i64 = 10001;
pub const SDK_WORKING_DIR: &str = "/";

/// The part of a request a warm member is made for.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub image: String,
    pub command: Command,
    pub working_dir: Option<String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub fs_group: Option<i64>,
    pub resource_factor: f64,
    pub runtime_class: Option<String>,
}

impl Shape {
    /// The shape of the SDK's own requests for `image`: its command, working directory, user and
    /// file group, factor 1, no runtime class. `WARM_POOL_SIZE` keeps a pool of this shape with
    /// `DEFAULT_IMAGE`.
    pub fn sdk(image: &str) -> Shape {
        Shape {
            image: image.to_string(),
            command: Command::Shell(SDK_COMMAND.into()),
            working_dir: Some(SDK_WORKING_DIR.into()),
            run_as_user: Some(SDK_USER),
            run_as_group: None,
            fs_group: Some(SDK_USER),
            resource_factor: 1.0,
            runtime_class: None,
        }
    }

    /// The shape of a request.
    pub fn of(spec: &RuntimeSpec) -> Shape {
        Shape {
            image: spec.image.clone(),
            command: spec.command.clone(),
            working_dir: spec.working_dir.clone(),
            run_as_user: spec.run_as_user,
            run_as_group: spec.run_as_group,
            fs_group: spec.fs_group,
            resource_factor: spec.resource_factor,
            runtime_class: spec.runtime_class.clone(),
        }
    }

    /// The spec a member of this shape is started with: no session, no environment.
    pub fn member_spec(&self) -> RuntimeSpec {
        RuntimeSpec {
            command: self.command.clone(),
            working_dir: self.working_dir.clone(),
            resource_factor: self.resource_factor,
            runtime_class: self.runtime_class.clone(),
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            fs_group: self.fs_group,
            ..RuntimeSpec::new("", self.image.clone())
        }
    }
}

/// One pool: a shape and how many ready members to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    /// A short name for labels and metrics: `default`, or `pool-N` in `WARM_POOLS` order (or
    /// the entry's `name=`).
    pub name: String,
    pub shape: Shape,
    pub size: usize,
}

/// Every configured pool; empty when warm pools are off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pools(pub Vec<PoolSpec>);

impl Pools {
    /// `WARM_POOL_SIZE` (a pool of the SDK shape of `DEFAULT_IMAGE`, named `default`) plus the
    /// `WARM_POOLS` entries; pools of size 0 are dropped.
    pub fn new(default_size: usize, default_image: &str, more: &[PoolSpec]) -> Pools {
        let mut pools = Vec::new();
        if default_size > 0 {
            pools.push(PoolSpec {
                name: "default".into(),
                shape: Shape::sdk(default_image),
                size: default_size,
            });
        }
        pools.extend(more.iter().filter(|p| p.size > 0).cloned());
        Pools(pools)
    }

    /// The pool serving a request of `shape` (the first that matches).
    pub fn for_shape(&self, shape: &Shape) -> Option<&PoolSpec> {
        self.0.iter().find(|p| &p.shape == shape)
    }

    pub fn by_name(&self, name: &str) -> Option<&PoolSpec> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The parsed `WARM_POOLS` setting (a newtype: clap would read a `Vec` as repeated values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolList(pub Vec<PoolSpec>);

/// `WARM_POOLS` for clap.
pub fn parse_pool_list(s: &str) -> Result<PoolList, PoolsError> {
    parse_pools(s).map(PoolList)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolsError(pub String);

impl fmt::Display for PoolsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolsError {}

/// Parses `WARM_POOLS`: pools separated by `;`, each a list of `key=value` separated by `,`:
/// `size` (required), `image` (required), `name`, `factor`, `class` (runtime class), `user`,
/// `group`, `fs_group`, `workdir`, and `command`, which must come last and takes the rest of the
/// entry. Omitted keys keep the SDK's values ([`Shape::sdk`]); `none` clears an optional one.
/// Example: `size=3,image=ghcr.io/openhands/agent-server:1.19.1-python;size=1,image=...,factor=2,class=sysbox-runc`.
pub fn parse_pools(s: &str) -> Result<Vec<PoolSpec>, PoolsError> {
    let mut pools: Vec<PoolSpec> = Vec::new();
    for (i, entry) in s.split(';').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let pool = parse_entry(entry, i + 1)
            .map_err(|e| PoolsError(format!("WARM_POOLS entry {}: {e}", i + 1)))?;
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(PoolsError(format!("WARM_POOLS names pool {:?} twice", pool.name)));
        }
        if pools.iter().any(|p| p.shape == pool.shape) {
            return Err(PoolsError(format!(
                "WARM_POOLS entry {}: the same shape as pool {:?}",
                i + 1,
                pools.iter().find(|p| p.shape == pool.shape).map(|p| p.name.as_str()).unwrap_or("")
            )));
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn parse_entry(entry: &str, position: usize) -> Result<PoolSpec, String> {
    let (head, command) = match entry.find("command=") {
        Some(at) if at == 0 || entry[..at].trim_end().ends_with(',') => {
            (&entry[..at], Some(entry[at + "command=".len()..].trim()))
        }
        _ => (entry, None),
    };
    let mut size = None;
    let mut image = None;
    let mut name = None;
    let mut shape = Shape::sdk("");
    let id = |key: &str, v: &str| -> Result<Option<i64>, String> {
        if v == "none" {
            return Ok(None);
        }
        v.parse::<i64>().map(Some).map_err(|_| format!("{key}={v:?} is not a number or none"))
    };
    for pair in head.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let value = value.trim();
        let optional = (value != "none").then(|| value.to_string());
        match key.trim() {
            "size" => {
                size = Some(
                    value.parse::<usize>().map_err(|_| format!("size={value:?} is not a count"))?,
                )
            }
            "image" => image = Some(value.to_string()),
            "name" => name = Some(value.to_string()),
            "factor" => {
                shape.resource_factor =
                    value.parse().map_err(|_| format!("factor={value:?} is not a number"))?
            }
            "class" => shape.runtime_class = optional,
            "workdir" => shape.working_dir = optional,
            "user" => shape.run_as_user = id(key, value)?,
            "group" => shape.run_as_group = id(key, value)?,
            "fs_group" => shape.fs_group = id(key, value)?,
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    if let Some(command) = command {
        shape.command = Command::from_wire(Some(Command::Shell(command.to_string())));
    }
    shape.image = image.ok_or("image= is required")?;
    let size = size.ok_or("size= is required")?;
    let name = name.unwrap_or_else(|| format!("pool-{position}"));
    if name.is_empty()
        || name.len() > 40
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("name {name:?} must be 1-40 of a-z, 0-9 and '-'"));
    }
    // The same rules as a start request, so a pool can only hold what a request could ask for.
    let probe = RuntimeSpec { session_id: "pool".into(), ..shape.member_spec() };
    probe.validate().map_err(|e| e.0)?;
    Ok(PoolSpec { name, shape, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sdk_request_matches_the_default_pool() {
        let mut spec = RuntimeSpec::new("s", "ghcr.io/openhands/agent-server:1-python");
        spec.command = Command::Shell(SDK_COMMAND.into());
        spec.working_dir = Some("/".into());
        spec.run_as_user = Some(10001);
        spec.fs_group = Some(10001);
        spec.environment.insert("GITHUB_TOKEN".into(), "x".into());
        let pools = Pools::new(2, "ghcr.io/openhands/agent-server:1-python", &[]);
        assert_eq!(pools.for_shape(&Shape::of(&spec)).map(|p| p.name.as_str()), Some("default"));
        let other = RuntimeSpec { resource_factor: 2.0, ..spec.clone() };
        assert!(pools.for_shape(&Shape::of(&other)).is_none());
        let other = RuntimeSpec { image: "ghcr.io/x/y:2".into(), ..spec };
        assert!(pools.for_shape(&Shape::of(&other)).is_none());
        assert!(Pools::new(0, "ghcr.io/x/y:2", &[]).is_empty());
    }

    #[test]
    fn parses_pools_with_defaults_overrides_and_a_command() {
        let pools = parse_pools(
            " size=3,image=ghcr.io/a/b:1 ; size=1,name=big,image=ghcr.io/a/b:1,factor=2,class=sysbox-runc,user=none,fs_group=5,workdir=/w,command=/bin/agent --port 60000, --x ;",
        )
        .unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(
            pools[0],
            PoolSpec { name: "pool-1".into(), shape: Shape::sdk("ghcr.io/a/b:1"), size: 3 }
        );
        let big = &pools[1];
        assert_eq!(big.name, "big");
        assert_eq!(big.size, 1);
        assert_eq!(big.shape.resource_factor, 2.0);
        assert_eq!(big.shape.runtime_class.as_deref(), Some("sysbox-runc"));
        assert_eq!(big.shape.run_as_user, None);
        assert_eq!(big.shape.fs_group, Some(5));
        assert_eq!(big.shape.working_dir.as_deref(), Some("/w"));
        assert_eq!(big.shape.command, Command::Shell("/bin/agent --port 60000, --x".into()));
        assert_eq!(parse_pools("").unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_pools_naming_the_entry() {
        for (bad, says) in [
            ("size=1", "image= is required"),
            ("image=ghcr.io/a/b:1", "size= is required"),
            ("size=x,image=ghcr.io/a/b:1", "not a count"),
            ("size=1,image=Bad Image", "image"),
            ("size=1,image=ghcr.io/a/b:1,factor=100", "resource_factor"),
            ("size=1,image=ghcr.io/a/b:1,colour=red", "unknown key"),
            ("size=1,image=ghcr.io/a/b:1,name=Big", "name"),
            ("size=1,image=ghcr.io/a/b:1,user=-3", "run_as_user"),
            ("size=1,image=ghcr.io/a/b:1;size=2,image=ghcr.io/a/b:1", "same shape"),
        ] {
            let e = parse_pools(bad).expect_err(bad).0;
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_default_pool_comes_first_and_empty_pools_are_dropped() {
        let more = parse_pools("size=0,image=ghcr.io/a/b:1;size=2,image=ghcr.io/a/c:1").unwrap();
        let pools = Pools::new(1, "ghcr.io/a/d:1", &more);
        let names: Vec<_> = pools.0.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "pool-2"]);
        assert_eq!(pools.by_name("pool-2").unwrap().size, 2);
    }
}
