//! Small file helpers shared by the modules that write secrets and state,
//! and background writeback for large files being written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads until `buf` is full or the input ends; returns the bytes read
/// (fewer than `buf.len()` only at the end).
pub fn read_full(input: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Creates the directory `path` is in (and its parents) if missing.
pub fn create_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Replaces `path` with `contents` atomically (a temporary file in the same
/// directory, synced, then renamed over it), readable and writable by the
/// owner only (mode 0600). Readers see the old file or the new one, never
/// a mix; a crash leaves the old file in place.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let (tmp_path, mut tmp) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let candidate = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&candidate)
        {
            Ok(f) => break (candidate, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = tmp
        .write_all(contents)
        .and_then(|()| tmp.sync_all())
        .and_then(|()| std::fs::rename(&tmp_path, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    // Best effort: make the rename durable.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// After this many bytes written, [`Writeback`] starts writing them back.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Writes a growing file's data back to disk in the background while it is
/// still being written, so the final `fsync` finds little left to do
/// instead of the whole file: on a large transfer the disk works while the
/// data still arrives. Tell it of every write with [`Writeback::wrote`];
/// from `WRITEBACK_EVERY` bytes on, a thread of its own syncs a copy of
/// the fd. Errors are left to the caller's own final sync.
#[derive(Default)]
pub struct Writeback {
    unsynced: u64,
    nudge: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    /// Notes `n` more bytes written to `file`; starts a background sync
    /// once enough have gathered and none is pending.
    pub fn wrote(&mut self, file: &File, n: u64) {
        self.unsynced += n;
        if self.unsynced < WRITEBACK_EVERY {
            return;
        }
        self.unsynced = 0;
        if self.nudge.is_none() && !self.start(file) {
            return;
        }
        if let Some(n) = &self.nudge {
            let _ = n.try_send(());
        }
    }

    /// Starts the syncing thread; false when the fd or the thread cannot be
    /// had (the caller's final sync then does all the work).
    fn start(&mut self, file: &File) -> bool {
        let Ok(file) = file.try_clone() else {
            return false;
        };
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        let Ok(thread) = std::thread::Builder::new()
            .name("mcp-writeback".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    let _ = file.sync_data();
                }
            })
        else {
            return false;
        };
        self.nudge = Some(nudge);
        self.thread = Some(thread);
        true
    }

    /// Stops the thread, waiting for a sync in progress.
    pub fn stop(&mut self) {
        self.nudge = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn writeback_starts_on_large_files_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut file = File::create(&path).unwrap();
        let mut wb = Writeback::default();
        let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        for i in 0..40 {
            file.write_all(&chunk).unwrap();
            wb.wrote(&file, chunk.len() as u64);
            // Started once 32 MiB were written, not before.
            assert_eq!(wb.thread.is_some(), i >= 31, "after {} MiB", i + 1);
        }
        wb.stop();
        assert!(wb.thread.is_none());
        file.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 40 << 20);
        assert!(back.chunks(1 << 20).all(|c| c == chunk.as_slice()));
    }
}
