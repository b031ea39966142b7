//! The container options users type on a command line, parsed into domain types: mounts (`-v`, `--mount`,
//! `--tmpfs`), per-process limits (`--ulimit`), and what `cp` needs to describe a path.
//!
//! Parsing only checks the syntax; the engine checks the values against the host (a bind's source exists, a
//! limit is within the daemon's own) when it resolves a request.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{MountConfig, MountKind};

/// The bind option that keeps a read-only bind's submounts writable (Docker's `bind-recursive=writable`): only
/// the bind itself is read-only. Without it a read-only bind is read-only recursively.
pub const BIND_WRITABLE_SUBMOUNTS: &str = "bind-recursive=writable";

/// Mount propagation modes a bind may ask for.
pub const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn bad_mount(flag: &str, text: &str, why: impl fmt::Display) -> Error {
    Error::invalid("mounts", format!("invalid {flag} {text:?}: {why}"))
}

impl MountConfig {
    /// Parses Docker's `-v` syntax: `/host:/ctr[:OPTS]` (bind), `NAME:/ctr[:OPTS]` (named volume) or `/ctr`
    /// (anonymous volume). `OPTS` is a comma-separated list of `ro`, `rw`, `z`, `Z`, `nocopy`, a propagation
    /// mode, or `consistent|cached|delegated` (accepted and ignored, as on Linux Docker).
    pub fn parse_volume_flag(text: &str) -> Result<MountConfig> {
        let bad = |why: &str| bad_mount("volume", text, why);
        let parts: Vec<&str> = text.split(':').collect();
        let (source, destination, opts) = match parts.as_slice() {
            [dest] => ("", *dest, ""),
            [src, dest] if !src.is_empty() => (*src, *dest, ""),
            [src, dest, opts] if !src.is_empty() => (*src, *dest, *opts),
            _ => return Err(bad("use [SOURCE:]DESTINATION[:OPTIONS]")),
        };
        if destination.is_empty() || !destination.starts_with('/') {
            return Err(bad(
                "the destination must be an absolute path in the container",
            ));
        }
        let kind = if source.is_empty() || !source.starts_with(['/', '.', '~']) {
            MountKind::Volume
        } else {
            MountKind::Bind
        };
        let mut m = MountConfig {
            kind,
            source: source.into(),
            destination: destination.into(),
            ..Default::default()
        };
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" => m.readonly = true,
                "rw" => m.readonly = false,
                "z" | "Z" | "consistent" | "cached" | "delegated" => m.options.push(opt.into()),
                "nocopy" if kind == MountKind::Volume => m.options.push(opt.into()),
                p if PROPAGATIONS.contains(&p) && kind == MountKind::Bind => {
                    m.options.push(p.into())
                }
                other => {
                    return Err(bad(&format!(
                        "unknown option {other:?} for a {kind}: use ro, rw, z, Z, nocopy (volumes) or a propagation (binds)"
                    )));
                }
            }
        }
        Ok(m)
    }

    /// Parses Docker's `--mount` syntax: `type=bind|volume|tmpfs|image,source=...,destination=...` with
    /// `readonly`, `bind-propagation=`, `volume-nocopy`, `tmpfs-size=`, `tmpfs-mode=` and `image-subpath=`. An
    /// image mount (`type=image,source=IMAGE`, as Docker 28 has it) is always read-only.
    pub fn parse_mount_flag(text: &str) -> Result<MountConfig> {
        let bad = |why: String| bad_mount("mount", text, why);
        let mut m = MountConfig {
            kind: MountKind::Volume,
            ..Default::default()
        };
        let mut tmpfs_opts = Vec::new();
        // `readonly=false` given (an image mount cannot be).
        let mut writable = false;
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (field.trim(), None),
            };
            let flag = |v: Option<&str>| match v {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(other) => Err(bad(format!("{key}={other}: use true or false"))),
            };
            let need = |v: Option<&str>| {
                v.filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{key} needs a value")))
            };
            match key {
                "type" => {
                    m.kind = need(value)?.parse().map_err(|_| {
                        bad(format!(
                            "unknown type {:?}: use bind, volume, tmpfs or image",
                            value.unwrap_or_default()
                        ))
                    })?
                }
                "source" | "src" => m.source = need(value)?,
                "destination" | "dst" | "target" => m.destination = need(value)?,
                "readonly" | "ro" => {
                    m.readonly = flag(value)?;
                    writable = !m.readonly;
                }
                "bind-propagation" => {
                    let p = need(value)?;
                    if !PROPAGATIONS.contains(&p.as_str()) {
                        return Err(bad(format!(
                            "unknown bind-propagation {p:?}: use {}",
                            PROPAGATIONS.join(", ")
                        )));
                    }
                    m.options.push(p);
                }
                "volume-nocopy" => {
                    if flag(value)? {
                        m.options.push("nocopy".into());
                    }
                }
                "tmpfs-size" => tmpfs_opts.push(format!("size={}", need(value)?)),
                "tmpfs-mode" => tmpfs_opts.push(format!("mode={}", need(value)?)),
                "volume-driver" => {
                    let driver = need(value)?;
                    if driver != "local" {
                        return Err(bad(format!(
                            "volume driver {driver:?} is not available: husk has the local driver only"
                        )));
                    }
                }
                "consistency" => {}
                "image-subpath" => m.subpath = Some(need(value)?),
                other => return Err(bad(format!("unknown field {other:?}"))),
            }
        }
        if m.destination.is_empty() || !m.destination.starts_with('/') {
            return Err(bad(
                "the destination must be an absolute path in the container".into(),
            ));
        }
        match m.kind {
            MountKind::Bind if m.source.is_empty() => {
                return Err(bad("a bind mount needs a source".into()));
            }
            MountKind::Image if m.source.is_empty() => {
                return Err(bad("an image mount needs a source (the image)".into()));
            }
            MountKind::Image if writable => {
                return Err(bad("an image mount is read-only".into()));
            }
            MountKind::Image => m.readonly = true,
            MountKind::Tmpfs if !m.source.is_empty() => {
                return Err(bad("a tmpfs mount takes no source".into()));
            }
            _ => {}
        }
        if m.subpath.is_some() && m.kind != MountKind::Image {
            return Err(bad("image-subpath applies to type=image only".into()));
        }
        if !tmpfs_opts.is_empty() && m.kind != MountKind::Tmpfs {
            return Err(bad(
                "tmpfs-size and tmpfs-mode apply to type=tmpfs only".into()
            ));
        }
        let wrong_kind = m.options.iter().any(|o| {
            (PROPAGATIONS.contains(&o.as_str()) && m.kind != MountKind::Bind)
                || (o == "nocopy" && m.kind != MountKind::Volume)
        });
        if wrong_kind {
            return Err(bad(format!(
                "bind-propagation applies to binds and volume-nocopy to volumes, not to a {} mount",
                m.kind
            )));
        }
        m.options.extend(tmpfs_opts);
        Ok(m)
    }

    /// Parses Docker's `--tmpfs` syntax: `/ctr[:OPTS]`, `OPTS` being tmpfs mount options (`size=64m,mode=1777`).
    pub fn parse_tmpfs_flag(text: &str) -> Result<MountConfig> {
        let (destination, opts) = text.split_once(':').unwrap_or((text, ""));
        if !destination.starts_with('/') {
            return Err(bad_mount(
                "tmpfs",
                text,
                "the destination must be an absolute path in the container",
            ));
        }
        let mut m = MountConfig {
            kind: MountKind::Tmpfs,
            destination: destination.into(),
            ..Default::default()
        };
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" => m.readonly = true,
                "rw" => m.readonly = false,
                other => m.options.push(other.into()),
            }
        }
        Ok(m)
    }

    /// The propagation mode the mount asks for, if any.
    pub fn propagation(&self) -> Option<&str> {
        self.options
            .iter()
            .map(String::as_str)
            .find(|o| PROPAGATIONS.contains(o))
    }
}

/// Resources `--ulimit` may set, by Docker's names, with the kernel's `RLIMIT_*` names.
pub const ULIMIT_NAMES: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// One per-process resource limit. `-1` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name (`nofile`, `nproc` ...).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` (values are numbers, `-1` or `unlimited`; without a hard limit it equals
    /// the soft one).
    pub fn parse(text: &str) -> Result<Ulimit> {
        let bad = |why: &str| {
            Error::invalid(
                "ulimits",
                format!(
                    "invalid ulimit {text:?}: {why}; use NAME=SOFT[:HARD], e.g. nofile=1024:2048"
                ),
            )
        };
        let (name, values) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim().to_ascii_lowercase();
        if !ULIMIT_NAMES.iter().any(|(n, _)| *n == name) {
            return Err(bad(&format!(
                "unknown resource {name:?} (known: {})",
                ULIMIT_NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let value = |v: &str| -> Result<i64> {
            match v.trim() {
                "unlimited" | "-1" => Ok(-1),
                n => n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("limits are numbers, -1 or unlimited")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => {
                let v = value(values)?;
                (v, v)
            }
        };
        let u = Ulimit { name, soft, hard };
        u.check()?;
        Ok(u)
    }

    /// Checks that the name is known and the soft limit is not above the hard one.
    pub fn check(&self) -> Result<()> {
        if self.kernel_name().is_none() {
            return Err(Error::invalid(
                "ulimits",
                format!("unknown ulimit {:?}", self.name),
            ));
        }
        if self.soft < -1 || self.hard < -1 {
            return Err(Error::invalid(
                "ulimits",
                format!("ulimit {}: limits are numbers or -1 (unlimited)", self.name),
            ));
        }
        if Self::as_u64(self.soft) > Self::as_u64(self.hard) {
            return Err(Error::invalid(
                "ulimits",
                format!(
                    "ulimit {}: the soft limit {} is above the hard limit {}",
                    self.name,
                    Self::show(self.soft),
                    Self::show(self.hard)
                ),
            ));
        }
        Ok(())
    }

    /// The kernel's name (`RLIMIT_NOFILE`).
    pub fn kernel_name(&self) -> Option<&'static str> {
        ULIMIT_NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, k)| *k)
    }

    /// A limit as the kernel takes it (`-1` = `RLIM_INFINITY`).
    pub fn as_u64(value: i64) -> u64 {
        if value < 0 { u64::MAX } else { value as u64 }
    }

    /// A limit for people (`unlimited` or the number).
    pub fn show(value: i64) -> String {
        if value < 0 {
            "unlimited".into()
        } else {
            value.to_string()
        }
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}:{}",
            self.name,
            Self::show(self.soft),
            Self::show(self.hard)
        )
    }
}

/// What `stat` says about a path in a container (Docker's `X-Docker-Container-Path-Stat`, with a Unix mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// The last component of the path.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Modification time (RFC 3339); text, so that the Docker engine's own (Go's shortest form) passes through
    /// unchanged.
    #[serde(default)]
    pub mtime: String,
    /// For a symbolic link: the absolute path inside the container it resolves to (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_target: String,
}

impl PathStat {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }
}

/// How an archive is unpacked into a container (`cp` towards the container).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractOptions {
    /// Keep the archive's owners (`cp -a`); otherwise everything belongs to root.
    #[serde(default)]
    pub copy_owners: bool,
    /// Refuse to replace a directory with a non-directory or the reverse (always on for `cp`).
    #[serde(default)]
    pub no_overwrite_dir_non_dir: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_kinds_are_their_docker_names_and_nothing_else() {
        for &kind in MountKind::ALL {
            assert_eq!(kind.as_str().parse::<MountKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        let e = "nfs".parse::<MountKind>().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("type"));
        assert!(e.message.contains("bind, volume, tmpfs or image"), "{e}");
        let e = serde_json::from_str::<MountConfig>(r#"{"type": "nfs", "destination": "/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `nfs`"), "{e}");
        let e = MountConfig::parse_mount_flag("type=nfs,target=/x").unwrap_err();
        assert!(e.message.contains("unknown type \"nfs\""), "{e}");
    }

    #[test]
    fn volume_flags() {
        let m = MountConfig::parse_volume_flag("/srv:/data:ro,rslave,z").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("bind", "/srv", "/data")
        );
        assert!(m.readonly);
        assert_eq!(m.propagation(), Some("rslave"));
        let m = MountConfig::parse_volume_flag("db:/var/lib/db:nocopy").unwrap();
        assert_eq!((m.kind.as_str(), m.source.as_str()), ("volume", "db"));
        assert_eq!(m.options, vec!["nocopy"]);
        let m = MountConfig::parse_volume_flag("/cache").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("volume", "", "/cache")
        );
        let m = MountConfig::parse_volume_flag("./rel:/x").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        for bad in [
            "a:b",
            "/a:/b:bogus",
            "db:/x:rshared",
            "/a:/b:nocopy",
            "a:/b:c:d",
            ":/x",
            "rel",
        ] {
            let r = MountConfig::parse_volume_flag(bad);
            assert_eq!(r.unwrap_err().field.as_deref(), Some("mounts"), "{bad}");
        }
    }

    #[test]
    fn mount_flags() {
        let m = MountConfig::parse_mount_flag(
            "type=bind,src=/srv,dst=/data,readonly,bind-propagation=rshared",
        )
        .unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("bind", "/srv", "/data")
        );
        assert!(m.readonly);
        assert_eq!(m.propagation(), Some("rshared"));
        let m = MountConfig::parse_mount_flag(
            "type=volume,source=db,target=/db,volume-nocopy=true,readonly=false",
        )
        .unwrap();
        assert_eq!(m.options, vec!["nocopy"]);
        assert!(!m.readonly);
        let m = MountConfig::parse_mount_flag("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770")
            .unwrap();
        assert_eq!(m.options, vec!["size=64m", "mode=1770"]);
        let m = MountConfig::parse_mount_flag("dst=/anon").unwrap();
        assert_eq!((m.kind.as_str(), m.source.as_str()), ("volume", ""));
        let m = MountConfig::parse_mount_flag("type=image,source=busybox:1,target=/img").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("image", "busybox:1", "/img")
        );
        assert!(m.readonly, "an image mount is read-only without asking");
        assert_eq!(m.subpath, None);
        let m = MountConfig::parse_mount_flag("type=image,src=b,dst=/img,image-subpath=usr/share")
            .unwrap();
        assert_eq!(m.subpath.as_deref(), Some("usr/share"));
        for (bad, why) in [
            ("type=image,target=/img", "needs a source"),
            ("type=image,src=b,dst=/img,readonly=false", "read-only"),
            ("type=image,src=b,dst=/img,image-subpath=", "needs a value"),
            (
                "type=bind,src=/a,dst=/img,image-subpath=etc",
                "type=image only",
            ),
            (
                "type=image,src=b,dst=/img,bind-propagation=shared",
                "bind-propagation",
            ),
            ("type=image,src=b,dst=/img,volume-nocopy", "volume-nocopy"),
        ] {
            let e = MountConfig::parse_mount_flag(bad).unwrap_err();
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
        for bad in [
            "type=nfs,dst=/x",
            "type=bind,dst=/x",
            "type=bind,src=/a,dst=rel",
            "type=tmpfs,src=x,dst=/x",
            "type=volume,dst=/x,bind-propagation=shared",
            "type=bind,src=/a,dst=/x,tmpfs-size=1m",
            "type=bind,src=/a,dst=/x,readonly=maybe",
            "type=bind,src=/a,dst=/x,colour=red",
            "type=volume,dst=/x,volume-driver=nfs",
        ] {
            assert!(MountConfig::parse_mount_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_flags() {
        let m = MountConfig::parse_tmpfs_flag("/run:size=64m,mode=1777,ro").unwrap();
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert_eq!(m.options, vec!["size=64m", "mode=1777"]);
        assert!(m.readonly);
        assert!(MountConfig::parse_tmpfs_flag("run").is_err());
    }

    #[test]
    fn ulimits() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.soft, u.hard, u.kernel_name()),
            (1024, 2048, Some("RLIMIT_NOFILE"))
        );
        let u = Ulimit::parse("NPROC=100").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nproc", 100, 100));
        let u = Ulimit::parse("core=0:unlimited").unwrap();
        assert_eq!(u.hard, -1);
        assert_eq!(u.to_string(), "core=0:unlimited");
        for bad in [
            "nofile",
            "bogus=1",
            "nofile=2:1",
            "nofile=x",
            "nofile=-5",
            "nofile=unlimited:10",
        ] {
            assert_eq!(
                Ulimit::parse(bad).unwrap_err().field.as_deref(),
                Some("ulimits"),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_stat_kinds() {
        let d = PathStat {
            mode: 0o040755,
            ..Default::default()
        };
        assert!(d.is_dir() && !d.is_symlink());
        let l = PathStat {
            mode: 0o120777,
            ..Default::default()
        };
        assert!(l.is_symlink() && !l.is_dir());
    }
}
