//! Helpers shared by husk's fuzz targets.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Removes the tree at `path` even where an unpacked layer left directories without write or search permission
/// (a layer may set any mode; root ignores them, other users do not).
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    open_up(path);
    fs::remove_dir_all(path).expect("remove the unpacked layer");
}

fn open_up(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}
