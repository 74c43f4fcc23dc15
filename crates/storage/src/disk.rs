//! How much room the filesystem under a data directory has left.

use std::path::Path;

use crate::error::io;
use crate::Result;

/// Space of the filesystem holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free: u64,
    /// Size of the filesystem.
    pub total: u64,
}

/// `statvfs` of the filesystem holding `path`: one system call, cheap
/// enough to ask before every produce request.
///
/// # Errors
/// The system call's error, naming the path.
pub fn disk_space(path: &Path) -> Result<DiskSpace> {
    let s = rustix::fs::statvfs(path).map_err(|e| io("statvfs", path)(e.into()))?;
    Ok(DiskSpace {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_some_space_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = disk_space(dir.path()).unwrap();
        assert!(s.total > 0 && s.free <= s.total, "{s:?}");
        assert!(disk_space(&dir.path().join("missing")).is_err());
    }
}
