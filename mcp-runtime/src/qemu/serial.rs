//! A VM's serial console, kept within a size: QEMU writes the console to a
//! unix socket in the VM's state directory (`serial.sock`), never to a file
//! it would grow without end; [`SerialLogs`] runs one copier per running VM
//! that appends what arrives to `serial.log` and, when the next chunk would
//! take it past [`SerialLogs::max_size`], first moves it to `serial.log.1`
//! (replacing the one before). The console history on disk is so at most
//! twice the cap, whatever the guest writes.
//!
//! A guest that writes faster than the copier keeps up with is slowed by the
//! socket (QEMU's UART waits), not the agent. While no copier is connected
//! (the agent is down), QEMU drops the console output; the agent's next
//! look at the VM starts a copier again. A copier holds the directory open
//! and works relative to it, so a VM whose directory is renamed (a staged
//! replacement taking its name) keeps its log.
//!
//! [`read_history`] and [`read_from`] read the logs for `logs` on blocking
//! threads, in bounded pieces.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{self as rfs, Mode, OFlags};
use tokio::io::AsyncReadExt;

use super::vm::{SERIAL_LOG, SERIAL_ROTATED, VmDir};

/// The cap of `serial.log` when none is configured.
pub const DEFAULT_MAX_SIZE: u64 = 8 << 20;
/// The smallest cap allowed.
pub const MIN_MAX_SIZE: u64 = 4096;
/// Most bytes read from the socket at once.
const COPY_CHUNK: usize = 64 * 1024;
/// How long a copier tries to reach a socket that is not there yet.
const CONNECT_TRIES: u32 = 50;
const CONNECT_PAUSE: Duration = Duration::from_millis(100);

/// One copier: its task, and whether it has copied everything (QEMU
/// closed the console).
#[derive(Debug)]
struct Copier {
    task: tokio::task::AbortHandle,
    done: tokio::sync::watch::Receiver<bool>,
}

/// The copiers of the running VMs, by VM id.
#[derive(Debug)]
pub struct SerialLogs {
    max_size: u64,
    copiers: Arc<Mutex<HashMap<String, Copier>>>,
}

impl Drop for SerialLogs {
    fn drop(&mut self) {
        for (_, copier) in self
            .copiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            copier.task.abort();
        }
    }
}

impl SerialLogs {
    /// Copiers that keep each `serial.log` at most `max_size` bytes (at
    /// least [`MIN_MAX_SIZE`]).
    pub fn new(max_size: u64) -> SerialLogs {
        SerialLogs {
            max_size: max_size.max(MIN_MAX_SIZE),
            copiers: Arc::default(),
        }
    }

    /// The cap of each `serial.log`.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Makes sure the running VM `id` in `dir` has a copier; starts one if
    /// not. Needs a Tokio runtime.
    pub fn ensure(&self, dir: &Path, id: &str) {
        let mut copiers = self.copiers.lock().unwrap_or_else(|p| p.into_inner());
        if copiers.get(id).is_some_and(|c| !c.task.is_finished()) {
            return;
        }
        let (dir, max) = (dir.to_path_buf(), self.max_size);
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            if let Err(e) = copy(&dir, max).await {
                tracing::debug!(dir = %dir.display(), error = %e, "serial console copier ended");
            }
            let _ = done_tx.send(true);
        });
        copiers.insert(
            id.to_string(),
            Copier {
                task: task.abort_handle(),
                done,
            },
        );
    }

    /// Waits (at most `timeout`) until the copier of VM `id`, whose QEMU
    /// has exited, has copied the console's last output, and forgets it.
    pub async fn drained(&self, id: &str, timeout: Duration) {
        let copier = self
            .copiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(mut copier) = copier {
            let _ = tokio::time::timeout(timeout, copier.done.wait_for(|d| *d)).await;
            copier.task.abort();
        }
    }
}

/// Connects to the VM's console socket and copies it into the log until
/// QEMU closes it.
async fn copy(dir: &Path, max: u64) -> std::io::Result<()> {
    let socket = VmDir {
        dir: dir.to_path_buf(),
    }
    .serial_socket();
    let mut stream = None;
    for _ in 0..CONNECT_TRIES {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(CONNECT_PAUSE).await,
        }
    }
    let Some(mut stream) = stream else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no console socket at {}", socket.display()),
        ));
    };
    let mut log = CappedLog::open(dir, max)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let chunk = buf[..n].to_vec();
        log = tokio::task::spawn_blocking(move || log.append(&chunk).map(|()| log))
            .await
            .map_err(std::io::Error::other)??;
    }
}

/// `serial.log` in a held directory, rotated to `serial.log.1` before it
/// would pass its cap.
#[derive(Debug)]
pub struct CappedLog {
    dir: OwnedFd,
    file: std::fs::File,
    size: u64,
    max: u64,
}

impl CappedLog {
    /// Opens (or creates) `serial.log` in `dir` for appending.
    pub fn open(dir: &Path, max: u64) -> std::io::Result<CappedLog> {
        let dir = rfs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let file = open_log(&dir)?;
        let size = file.metadata()?.len();
        Ok(CappedLog {
            dir,
            file,
            size,
            max: max.max(MIN_MAX_SIZE),
        })
    }

    /// Appends `data`, rotating first when it would not fit; of a chunk
    /// larger than the cap only its end is kept.
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let cap = usize::try_from(self.max).unwrap_or(usize::MAX);
        let data = &data[data.len().saturating_sub(cap)..];
        if self.size + data.len() as u64 > self.max {
            rfs::renameat(&self.dir, SERIAL_LOG, &self.dir, SERIAL_ROTATED)?;
            self.file = open_log(&self.dir)?;
            self.size = 0;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

fn open_log(dir: &OwnedFd) -> std::io::Result<std::fs::File> {
    let fd = rfs::openat(
        dir,
        SERIAL_LOG,
        OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Where a followed log has read to: the file (by inode) and the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    inode: u64,
    offset: u64,
}

/// The console history of the VM in `dir`: `serial.log.1` then
/// `serial.log` (at most twice the cap), and where a follower goes on from
/// (the end of `serial.log`).
pub fn read_history(dir: &Path) -> std::io::Result<(Vec<u8>, Position)> {
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(dir.join(SERIAL_ROTATED)) {
        f.read_to_end(&mut out)?;
    }
    match std::fs::File::open(dir.join(SERIAL_LOG)) {
        Ok(mut f) => {
            use std::os::unix::fs::MetadataExt as _;
            let inode = f.metadata()?.ino();
            let before = out.len();
            f.read_to_end(&mut out)?;
            let offset = (out.len() - before) as u64;
            Ok((out, Position { inode, offset }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((out, Position::default())),
        Err(e) => Err(e),
    }
}

/// What was appended since `from`, at most `limit` bytes, and the new
/// position: the rest of the file that was rotated away first, then the
/// new one from its start.
pub fn read_from(dir: &Path, from: Position, limit: usize) -> std::io::Result<(Vec<u8>, Position)> {
    use std::os::unix::fs::MetadataExt as _;
    let current = match std::fs::File::open(dir.join(SERIAL_LOG)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let current_inode = match &current {
        Some(f) => f.metadata()?.ino(),
        None => return Ok((Vec::new(), from)),
    };
    let mut out = Vec::new();
    let mut pos = from;
    if pos.inode != current_inode {
        // Rotated: finish the old file if it is the one rotated away.
        if pos.inode != 0
            && let Ok(old) = std::fs::File::open(dir.join(SERIAL_ROTATED))
            && old.metadata()?.ino() == pos.inode
        {
            read_some(old, pos.offset, limit, &mut out)?;
            if out.len() >= limit {
                pos.offset += out.len() as u64;
                return Ok((out, pos));
            }
        }
        pos = Position {
            inode: current_inode,
            offset: 0,
        };
    }
    if let Some(f) = current {
        let before = out.len();
        read_some(f, pos.offset, limit - before, &mut out)?;
        pos.offset += (out.len() - before) as u64;
    }
    Ok((out, pos))
}

/// Reads at most `limit` bytes of `file` from `offset` into `out`.
fn read_some(
    mut file: std::fs::File,
    offset: u64,
    limit: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.take(limit as u64).read_to_end(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_never_passes_its_cap_and_followers_cross_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = CappedLog::open(dir.path(), MIN_MAX_SIZE).expect("open");
        let (_, mut pos) = read_history(dir.path()).expect("history");
        let mut followed = Vec::new();
        let mut written = Vec::new();
        for i in 0..100u32 {
            let line = format!("line {i} {}\n", "x".repeat(100));
            log.append(line.as_bytes()).expect("append");
            written.extend_from_slice(line.as_bytes());
            if i % 7 == 0 {
                let (got, next) = read_from(dir.path(), pos, 1 << 20).expect("read");
                followed.extend(got);
                pos = next;
            }
            let size = std::fs::metadata(dir.path().join(SERIAL_LOG))
                .expect("stat")
                .len();
            assert!(size <= MIN_MAX_SIZE, "{size}");
        }
        let (got, _) = read_from(dir.path(), pos, 1 << 20).expect("read");
        followed.extend(got);
        // A follower that looks more often than the log rotates twice sees
        // everything, in order.
        assert_eq!(followed, written);
        let rotated = std::fs::metadata(dir.path().join(SERIAL_ROTATED))
            .expect("rotated")
            .len();
        assert!(rotated <= MIN_MAX_SIZE);
        let (history, _) = read_history(dir.path()).expect("history");
        assert!(written.ends_with(&history));
        // A chunk larger than the cap keeps its end.
        log.append(&vec![b'z'; 3 * MIN_MAX_SIZE as usize])
            .expect("append");
        let size = std::fs::metadata(dir.path().join(SERIAL_LOG))
            .expect("stat")
            .len();
        assert_eq!(size, MIN_MAX_SIZE);
    }
}
