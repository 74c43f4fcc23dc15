//! File descriptors that sealed segments let go of.
//!
//! A sealed segment is read only through its maps, which stay valid after
//! the descriptor they were made from is closed (mmap(2)). Holding three
//! descriptors per closed segment would make a broker's descriptor use
//! grow with the log rather than with its partitions (issue #21, 3), so a
//! sealed segment closes its log and index files and reopens them by path
//! only when they must change again (a truncation into the segment) or be
//! fsynced. Kafka and Redpanda bound the same cost with an fd cache because
//! their readers go through the descriptor; ours never do.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::io;
use crate::Result;

/// A read-write descriptor of the file at `path`, closed while idle.
#[derive(Debug)]
pub(crate) struct FileHandle {
    path: PathBuf,
    file: Option<Arc<File>>,
}

impl FileHandle {
    pub(crate) fn new(path: PathBuf, file: File) -> Self {
        FileHandle { path, file: Some(Arc::new(file)) }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open descriptor, reopening the file (and keeping it open) if it
    /// was released.
    pub(crate) fn get(&mut self) -> Result<&Arc<File>> {
        if self.file.is_none() {
            self.file = Some(Arc::new(reopen(&self.path)?));
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// A descriptor to use once: the open one, or a fresh one that closes
    /// when dropped (an fsync of a sealed segment's index, say).
    pub(crate) fn shared(&self) -> Result<Arc<File>> {
        match &self.file {
            Some(f) => Ok(f.clone()),
            None => reopen(&self.path).map(Arc::new),
        }
    }

    /// Closes the descriptor; maps made from it stay valid.
    pub(crate) fn release(&mut self) {
        self.file = None;
    }
}

fn reopen(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(io("reopen", path))
}
