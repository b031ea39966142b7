//! Resolving `user[:group]` to numeric IDs from the container's own `/etc/passwd` and `/etc/group`.
//!
//! The files are opened inside the container's root filesystem with `openat2(RESOLVE_IN_ROOT)`, so a hostile
//! image whose `/etc/passwd` is a symlink to a host file only ever reads its own files.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use husk_core::{Error, GroupsPolicy, Result};

/// Numeric identity of a container process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups: the primary group first, then the image's (`/etc/group` membership) and the
    /// added ones.
    pub additional_gids: Vec<u32>,
    /// Home directory, for `HOME` when the image does not set it.
    pub home: String,
}

/// Reads a file inside `root` without following any symlink out of it; `Ok(None)` if it does not exist.
pub fn read_in_root(root: &Path, path: &str, limit: u64) -> Result<Option<String>> {
    let root_fd = File::open(root).map_err(|e| Error::io(format!("open {}", root.display()), e))?;
    use std::os::fd::AsFd;
    let fd = match husk_fs::openat2_retrying(
        root_fd.as_fd(),
        path.trim_start_matches('/'),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(Error::backend(format!("open {path} in the container: {e}"))),
    };
    let file = File::from(fd);
    let mut text = String::new();
    file.take(limit)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(format!("read {path} in the container"), e))?;
    Ok(Some(text))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members,
            })
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid` ...) against the passwd and group texts, as
/// Docker does: numeric IDs need no entry; names must exist; without a group the user's primary group is used
/// and, with [`GroupsPolicy::Merge`], supplementary groups come from membership lists. The primary group is
/// always a supplementary group too, as Docker and containerd make it (`id -G` lists it).
pub fn resolve_user_from(
    spec: &str,
    passwd: &str,
    group: &str,
    policy: GroupsPolicy,
) -> Result<ResolvedUser> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let (uid, mut gid, name, home) = if let Ok(uid) = user_part.parse::<u32>() {
        match users.iter().find(|u| u.uid == uid) {
            Some(u) => (uid, u.gid, Some(u.name.clone()), u.home.clone()),
            None => (uid, 0, None, "/".to_string()),
        }
    } else {
        let u = users
            .iter()
            .find(|u| u.name == user_part)
            .ok_or_else(|| Error::invalid("user", format!("unable to find user {user_part}: no matching entries in the image's /etc/passwd")))?;
        (u.uid, u.gid, Some(u.name.clone()), u.home.clone())
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| Error::invalid("user", format!("unable to find group {g}: no matching entries in the image's /etc/group")))?,
        };
    }
    let mut from_image: Vec<u32> = match (&name, group_part, policy) {
        (Some(n), None, GroupsPolicy::Merge) => groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == n))
            .map(|g| g.gid)
            .collect(),
        _ => Vec::new(),
    };
    from_image.retain(|g| *g != gid);
    from_image.sort_unstable();
    from_image.dedup();
    let mut additional_gids = vec![gid];
    additional_gids.extend(from_image);
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Resolves `--group-add` entries (group names or numbers) against the group file text, as Docker does.
pub fn resolve_groups_from(groups: &[String], group: &str) -> Result<Vec<u32>> {
    let entries = parse_group(group);
    groups
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => entries
                .iter()
                .find(|e| e.name == *g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::invalid(
                        "group_add",
                        format!("unable to find group {g}: no matching entries in the image's /etc/group"),
                    )
                }),
        })
        .collect()
}

/// Resolves `user` and adds the supplementary `groups` (`--group-add`), from the files of `rootfs`; `policy`
/// says whether the image's groups of the user are added too.
pub fn resolve_user_with_groups(
    rootfs: &Path,
    user: &str,
    groups: &[String],
    policy: GroupsPolicy,
) -> Result<ResolvedUser> {
    let mut resolved = resolve_user(rootfs, user, policy)?;
    if groups.is_empty() {
        return Ok(resolved);
    }
    let group = read_in_root(rootfs, "etc/group", 4 << 20)?.unwrap_or_default();
    for gid in resolve_groups_from(groups, &group)? {
        if !resolved.additional_gids.contains(&gid) {
            resolved.additional_gids.push(gid);
        }
    }
    Ok(resolved)
}

/// Resolves `spec` against the files of the root filesystem at `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str, policy: GroupsPolicy) -> Result<ResolvedUser> {
    const LIMIT: u64 = 4 << 20;
    let passwd = read_in_root(rootfs, "etc/passwd", LIMIT)?.unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group", LIMIT)?.unwrap_or_default();
    resolve_user_from(spec, &passwd, &group, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# comment\nbroken\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www,other\nadm:x:4:www\n";

    fn merged(spec: &str) -> Result<ResolvedUser> {
        resolve_user_from(spec, PASSWD, GROUP, GroupsPolicy::Merge)
    }

    #[test]
    fn resolves_like_docker() {
        let r = merged("").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        assert_eq!(r.additional_gids, vec![0]);
        let r = merged("www").unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (33, 33, vec![33, 4, 50])
        );
        let r = merged("www:staff").unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (33, 50, vec![50]));
        let r = merged("1234:5678").unwrap();
        assert_eq!((r.uid, r.gid), (1234, 5678));
        let r = merged("33").unwrap();
        assert_eq!(r.gid, 33);
        assert_eq!(merged("nobody").unwrap_err().field.as_deref(), Some("user"));
        assert!(merged("www:nogroup").is_err());
    }

    #[test]
    fn strict_policy_never_takes_the_images_groups() {
        for spec in ["www", "33"] {
            let r = resolve_user_from(spec, PASSWD, GROUP, GroupsPolicy::Strict).unwrap();
            assert_eq!(
                (r.uid, r.gid, r.additional_gids),
                (33, 33, vec![33]),
                "{spec}"
            );
        }
    }

    #[test]
    fn added_groups_follow_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let added = ["1234".to_string(), "33".to_string(), "staff".to_string()];
        let r = resolve_user_with_groups(dir.path(), "33", &added, GroupsPolicy::Merge).unwrap();
        assert_eq!(r.additional_gids, vec![33, 4, 50, 1234]);
        let r = resolve_user_with_groups(dir.path(), "33", &added, GroupsPolicy::Strict).unwrap();
        assert_eq!(r.additional_gids, vec![33, 1234, 50]);
    }

    #[test]
    fn added_groups_by_name_or_number() {
        assert_eq!(
            resolve_groups_from(&["staff".into(), "1234".into()], GROUP).unwrap(),
            vec![50, 1234]
        );
        let e = resolve_groups_from(&["nosuch".into()], GROUP).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("group_add"));
    }

    #[test]
    fn never_reads_through_a_symlink_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        // The absolute symlink resolves inside the root, where /…/secret does not exist.
        assert_eq!(read_in_root(&root, "etc/passwd", 1024).unwrap(), None);
        std::os::unix::fs::symlink("../../secret", root.join("etc/group")).unwrap();
        assert_eq!(read_in_root(&root, "etc/group", 1024).unwrap(), None);
    }
}
