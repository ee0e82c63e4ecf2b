//! Moving files between this machine and a service's directory on a node
//! (`mcp push`, `mcp pull`): which files a command means, and each file's
//! transfer with its SHA-256 checked end to end.
//!
//! - A push reads the local file on a blocking thread, hashing as it goes,
//!   and streams a header (path, mode, size), the content in chunks and the
//!   digest; the agent writes to a temporary file, checks size and digest,
//!   and only then renames it into place. The digest the agent answers with
//!   is compared with the local one too.
//! - A pull writes what arrives to a temporary file beside the target
//!   (`.<name>.mcp-pull-<random>`), hashing as it goes, and renames it into
//!   place only when the size and the agent's digest check out; a failed
//!   pull leaves an existing local file as it was.
//!
//! Memory stays at a few chunks either way, whatever the file's size.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use mcp_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::wire::{CHUNK_SIZE, check_mode};

/// Chunks queued between the network and the local file, each way.
const QUEUE: usize = 8;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The agent refused or failed the call.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Local {
        /// The local path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The command's arguments do not name something transferable.
    #[error("{0}")]
    Invalid(String),
    /// The content arrived damaged: digests differ.
    #[error("{what}: SHA-256 mismatch: sent {expected}, got {actual}; nothing was replaced")]
    DigestMismatch {
        /// The file concerned.
        what: String,
        /// The digest of what the sender sent, in hex.
        expected: String,
        /// The digest of what arrived, in hex.
        actual: String,
    },
    /// The agent's stream broke its own rules (order of parts, sizes).
    #[error("{what}: {reason}; nothing was replaced")]
    Protocol {
        /// The file concerned.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// One file to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileJob {
    /// The file on this machine.
    pub local: PathBuf,
    /// The path in the service's directory.
    pub remote: String,
    /// Its size in bytes, as known when planned.
    pub size: u64,
    /// Permission bits the copy gets.
    pub mode: u32,
}

/// What a command means: the files to move, and what it leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The files, in order.
    pub jobs: Vec<FileJob>,
    /// Symlinks and special files met in a recursive transfer, not moved.
    pub skipped: Vec<String>,
}

impl Plan {
    /// Total bytes of the plan's files.
    pub fn total_bytes(&self) -> u64 {
        self.jobs.iter().map(|j| j.size).sum()
    }
}

/// A file moved, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The file on this machine.
    pub local: PathBuf,
    /// The path in the service's directory.
    pub remote: String,
    /// Bytes moved.
    pub size: u64,
    /// The SHA-256 both sides agree on, in hex.
    pub sha256: String,
}

/// The last component of a remote path (`""` for the service root).
fn remote_base(remote: &str) -> &str {
    remote
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|b| *b != ".")
        .unwrap_or("")
}

/// Joins a remote directory and a relative path (`"."` and `""` are the
/// service root).
fn remote_join(dir: &str, rel: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() || dir == "." {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

/// How a tree transfer is going, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeProgress {
    /// The files are known: this many bytes will move.
    Planned {
        /// Bytes of every file together.
        total_bytes: u64,
    },
    /// This many more bytes moved.
    Moved(u64),
}

/// What a tree transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeMoved {
    /// The node.
    pub node: String,
    /// The service whose directory it was.
    pub service: String,
    /// The files moved, in order.
    pub files: Vec<Moved>,
    /// Symlinks and special files met and left alone.
    pub skipped: Vec<String>,
}

/// `mcp push` and the Python `Client.push`: copies `local` (a directory and
/// everything in it with `recursive`) into `service`'s directory on the
/// client's node, as [`plan_push`] lays it out, each file checked end to
/// end. `mode` must be permission bits only ([`check_mode`]).
pub async fn push_tree(
    client: &mut Client,
    service: &str,
    local: &Path,
    remote: Option<&str>,
    recursive: bool,
    mode: Option<u32>,
    progress: &(dyn Fn(TreeProgress) + Send + Sync),
) -> Result<TreeMoved, TransferError> {
    if let Some(m) = mode {
        check_mode(m).map_err(TransferError::Invalid)?;
    }
    let plan = plan_push(local, remote, recursive, mode)?;
    progress(TreeProgress::Planned {
        total_bytes: plan.total_bytes(),
    });
    let mut files = Vec::with_capacity(plan.jobs.len());
    for job in &plan.jobs {
        files.push(push(client, service, job, &|n| progress(TreeProgress::Moved(n))).await?);
    }
    Ok(TreeMoved {
        node: client.node().to_string(),
        service: service.to_string(),
        files,
        skipped: plan.skipped,
    })
}

/// `mcp pull` and the Python `Client.pull`: copies `remote` (a directory and
/// everything in it with `recursive`) from `service`'s directory on the
/// client's node to `local`, as [`plan_pull`] lays it out, each file
/// checked end to end and renamed into place only once it all arrived.
pub async fn pull_tree(
    client: &mut Client,
    service: &str,
    remote: &str,
    local: Option<&Path>,
    recursive: bool,
    progress: &(dyn Fn(TreeProgress) + Send + Sync),
) -> Result<TreeMoved, TransferError> {
    let plan = plan_pull(client, service, remote, local, recursive).await?;
    progress(TreeProgress::Planned {
        total_bytes: plan.total_bytes(),
    });
    let mut files = Vec::with_capacity(plan.jobs.len());
    for job in &plan.jobs {
        files.push(pull(client, service, job, &|n| progress(TreeProgress::Moved(n))).await?);
    }
    Ok(TreeMoved {
        node: client.node().to_string(),
        service: service.to_string(),
        files,
        skipped: plan.skipped,
    })
}

/// The files `mcp push LOCAL [REMOTE]` means. A file goes to REMOTE, or to
/// its own name at the top of the service's directory; with a REMOTE ending
/// in `/`, into that directory. A directory needs `recursive` and becomes
/// REMOTE (by default its own name), its files at the same relative paths;
/// symlinks and special files inside it are skipped. Each file keeps its
/// permission bits unless `mode` is given.
pub fn plan_push(
    local: &Path,
    remote: Option<&str>,
    recursive: bool,
    mode: Option<u32>,
) -> Result<Plan, TransferError> {
    let meta = std::fs::metadata(local).map_err(local_err(local))?;
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode_of = |m: &std::fs::Metadata| {
        use std::os::unix::fs::PermissionsExt;
        mode.unwrap_or(m.permissions().mode() & 0o777)
    };
    if meta.is_file() {
        let remote = match remote {
            None => name,
            Some(r) if r.ends_with('/') => remote_join(r, &name),
            Some(r) => r.to_string(),
        };
        return Ok(Plan {
            jobs: vec![FileJob {
                local: local.to_path_buf(),
                remote,
                size: meta.len(),
                mode: mode_of(&meta),
            }],
            skipped: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err(TransferError::Invalid(format!(
            "{} is not a regular file or a directory",
            local.display()
        )));
    }
    if !recursive {
        return Err(TransferError::Invalid(format!(
            "{} is a directory: push it with -r",
            local.display()
        )));
    }
    let base = remote.map_or(name, |r| r.trim_end_matches('/').to_string());
    let mut plan = Plan::default();
    let mut stack = vec![(local.to_path_buf(), base)];
    while let Some((dir, remote_dir)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(local_err(&dir))?
            .collect::<Result<_, _>>()
            .map_err(local_err(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.into_iter().rev() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let remote = remote_join(&remote_dir, &name);
            let meta = std::fs::symlink_metadata(&path).map_err(local_err(&path))?;
            if meta.is_dir() {
                stack.push((path, remote));
            } else if meta.is_file() {
                plan.jobs.push(FileJob {
                    local: path,
                    remote,
                    size: meta.len(),
                    mode: mode_of(&meta),
                });
            } else {
                plan.skipped.push(path.display().to_string());
            }
        }
    }
    plan.jobs.sort_by(|a, b| a.remote.cmp(&b.remote));
    Ok(plan)
}

/// The files `mcp pull REMOTE [LOCAL]` means, asked of the agent. A file
/// (or a symlink, pulled as what it leads to) goes to LOCAL, or to its own
/// name in the current directory; into LOCAL when that is an existing
/// directory. A directory needs `recursive` and becomes LOCAL (by default
/// its own name, or the service's for the root), its files at the same
/// relative paths; symlinks and special files in it are skipped.
pub async fn plan_pull(
    client: &mut Client,
    service: &str,
    remote: &str,
    local: Option<&Path>,
    recursive: bool,
) -> Result<Plan, TransferError> {
    let top = client.stat_file(service, remote).await?;
    let base = match remote_base(&top.path) {
        "" => service.to_string(),
        b => b.to_string(),
    };
    // A symlink is pulled as the file it leads to; the agent follows it
    // only while it stays inside the service's directory.
    if top.kind == "file" || top.kind == "symlink" {
        let local = match local {
            None => PathBuf::from(&base),
            Some(l) if l.is_dir() => l.join(&base),
            Some(l) => l.to_path_buf(),
        };
        return Ok(Plan {
            jobs: vec![FileJob {
                local,
                remote: top.path,
                size: top.size,
                mode: top.mode & 0o777,
            }],
            skipped: Vec::new(),
        });
    }
    if top.kind != "dir" {
        return Err(TransferError::Invalid(format!(
            "{remote} is a {} on the node, not a file or a directory",
            top.kind
        )));
    }
    if !recursive {
        return Err(TransferError::Invalid(format!(
            "{remote} is a directory: pull it with -r"
        )));
    }
    let local_base = local.map_or_else(|| PathBuf::from(&base), Path::to_path_buf);
    let prefix = if top.path == "." {
        String::new()
    } else {
        format!("{}/", top.path)
    };
    let mut plan = Plan::default();
    for entry in client.list_files(service, &top.path, true).await? {
        let rel = entry.path.strip_prefix(&prefix).unwrap_or(&entry.path);
        match entry.kind.as_str() {
            "file" => plan.jobs.push(FileJob {
                local: local_base.join(rel),
                remote: entry.path.clone(),
                size: entry.size,
                mode: entry.mode & 0o777,
            }),
            "dir" => {}
            _ => plan.skipped.push(entry.path.clone()),
        }
    }
    Ok(plan)
}

/// Pushes one file; `progress` is told of every chunk sent.
pub async fn push(
    client: &mut Client,
    service: &str,
    job: &FileJob,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Moved, TransferError> {
    use pb::push_file_request::Part;
    let file = std::fs::File::open(&job.local).map_err(local_err(&job.local))?;
    let (tx, rx) = mpsc::channel::<pb::PushFileRequest>(QUEUE);
    let header = pb::PushFileRequest {
        part: Some(Part::Header(pb::PushFileHeader {
            service: service.to_string(),
            path: job.remote.clone(),
            mode: job.mode,
            size: job.size,
        })),
    };
    // The reader: the announced size exactly, hashed, then the digest.
    let path = job.local.clone();
    let size = job.size;
    let reader = tokio::task::spawn_blocking(move || -> Result<[u8; 32], TransferError> {
        let mut file = file.take(size);
        let mut hasher = Sha256::new();
        if tx.blocking_send(header).is_err() {
            return Ok(hasher.finalize().into());
        }
        loop {
            let mut buf = BytesMut::zeroed(CHUNK_SIZE);
            let n = crate::fsutil::read_full(&mut file, &mut buf).map_err(local_err(&path))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hasher.update(&buf);
            let part = pb::PushFileRequest {
                part: Some(Part::Data(buf.freeze())),
            };
            if tx.blocking_send(part).is_err() {
                return Ok(hasher.finalize().into());
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let _ = tx.blocking_send(pb::PushFileRequest {
            part: Some(Part::Sha256(digest.to_vec())),
        });
        Ok(digest)
    });
    // The stream must be 'static, so it counts what it sends into a channel
    // and `progress` is told from here.
    let (count_tx, mut count_rx) = mpsc::unbounded_channel::<u64>();
    let parts = tokio_stream::wrappers::ReceiverStream::new(rx).inspect(move |p| {
        if let Some(Part::Data(d)) = &p.part {
            let _ = count_tx.send(d.len() as u64);
        }
    });
    let call = client.push_file(parts);
    tokio::pin!(call);
    let response = loop {
        tokio::select! {
            res = &mut call => break res,
            Some(n) = count_rx.recv() => progress(n),
        }
    };
    while let Ok(n) = count_rx.try_recv() {
        progress(n);
    }
    let local_digest = reader
        .await
        .map_err(|e| TransferError::Invalid(format!("reading {}: {e}", job.local.display())))??;
    let response = response?;
    if response.sha256 != local_digest {
        return Err(TransferError::DigestMismatch {
            what: job.remote.clone(),
            expected: hex::encode(local_digest),
            actual: hex::encode(&response.sha256),
        });
    }
    Ok(Moved {
        local: job.local.clone(),
        remote: job.remote.clone(),
        size: response.entry.map_or(job.size, |e| e.size),
        sha256: hex::encode(local_digest),
    })
}

/// A local file being written through a temporary file beside it.
struct LocalWriter {
    tx: mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Result<Written, TransferError>>,
}

/// What a [`LocalWriter`] wrote.
struct Written {
    temp: tempfile::NamedTempFile,
    size: u64,
    sha256: [u8; 32],
}

impl LocalWriter {
    fn start(target: &Path) -> Result<LocalWriter, TransferError> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(local_err(&dir))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.mcp-pull-"))
            .tempfile_in(&dir)
            .map_err(local_err(&dir))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let path = temp.path().to_path_buf();
        let done = tokio::task::spawn_blocking(move || {
            let mut temp = temp;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut writeback = crate::fsutil::Writeback::default();
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                temp.write_all(&chunk).map_err(local_err(&path))?;
                writeback.wrote(temp.as_file(), chunk.len() as u64);
            }
            writeback.stop();
            Ok(Written {
                temp,
                size,
                sha256: hasher.finalize().into(),
            })
        });
        Ok(LocalWriter { tx, done })
    }
}

/// Pulls one file into place; `progress` is told of every chunk received.
pub async fn pull(
    client: &mut Client,
    service: &str,
    job: &FileJob,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Moved, TransferError> {
    use pb::pull_file_response::Part;
    let protocol = |reason: &str| TransferError::Protocol {
        what: job.remote.clone(),
        reason: reason.to_string(),
    };
    let mut stream = Box::pin(client.pull_file(service, &job.remote).await?);
    let header = match stream.next().await.transpose()? {
        Some(pb::PullFileResponse {
            part: Some(Part::Header(h)),
        }) => h,
        _ => return Err(protocol("the download did not start with the file's entry")),
    };
    let writer = LocalWriter::start(&job.local)?;
    let mut sent_digest = None;
    while let Some(item) = stream.next().await {
        match item?.part {
            Some(Part::Data(chunk)) => {
                let n = chunk.len() as u64;
                if writer.tx.send(chunk).await.is_err() {
                    break;
                }
                progress(n);
            }
            Some(Part::Sha256(d)) => {
                sent_digest = Some(d);
                break;
            }
            _ => return Err(protocol("a second entry arrived in the download")),
        }
    }
    let LocalWriter { tx, done } = writer;
    drop(tx);
    let Written {
        temp,
        size,
        sha256: digest,
    } = done
        .await
        .map_err(|e| TransferError::Invalid(format!("writing {}: {e}", job.local.display())))??;
    let Some(sent) = sent_digest else {
        return Err(protocol("the download ended before its SHA-256"));
    };
    if sent != digest {
        return Err(TransferError::DigestMismatch {
            what: job.remote.clone(),
            expected: hex::encode(&sent),
            actual: hex::encode(digest),
        });
    }
    if size < header.size {
        // The file shrank while it was read; what arrived is what was sent.
        tracing::debug!(remote = %job.remote, announced = header.size, size, "file shrank during pull");
    }
    let local = job.local.clone();
    let mode = header.mode & 0o777;
    tokio::task::spawn_blocking(move || -> Result<(), TransferError> {
        use std::os::unix::fs::PermissionsExt;
        let file = temp.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(local_err(temp.path()))?;
        file.sync_all().map_err(local_err(temp.path()))?;
        temp.persist(&local).map_err(|e| TransferError::Local {
            path: local.clone(),
            source: e.error,
        })?;
        if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(local_err(dir))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| TransferError::Invalid(format!("writing {}: {e}", job.local.display())))??;
    Ok(Moved {
        local: job.local.clone(),
        remote: job.remote.clone(),
        size,
        sha256: hex::encode(digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names() {
        assert_eq!(remote_base("conf/app.toml"), "app.toml");
        assert_eq!(remote_base("conf/"), "conf");
        assert_eq!(remote_base("."), "");
        assert_eq!(remote_join(".", "a"), "a");
        assert_eq!(remote_join("", "a"), "a");
        assert_eq!(remote_join("conf/", "a"), "conf/a");
    }

    #[test]
    fn push_plan_of_a_file_and_a_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.toml");
        std::fs::write(&f, "x = 1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let plan = plan_push(&f, None, false, None).unwrap();
        assert_eq!(plan.jobs[0].remote, "app.toml");
        assert_eq!(plan.jobs[0].mode, 0o640);
        assert_eq!(plan.jobs[0].size, 6);
        assert_eq!(
            plan_push(&f, Some("conf/"), false, None).unwrap().jobs[0].remote,
            "conf/app.toml"
        );
        assert_eq!(
            plan_push(&f, Some("c.toml"), false, Some(0o600))
                .unwrap()
                .jobs[0]
                .mode,
            0o600
        );

        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        std::fs::write(tree.join("a"), "a").unwrap();
        std::fs::write(tree.join("sub/deeper/b"), "bb").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("sub/link")).unwrap();
        let err = plan_push(&tree, None, false, None).unwrap_err().to_string();
        assert!(err.contains("push it with -r"), "{err}");
        let plan = plan_push(&tree, Some("data"), true, None).unwrap();
        let remotes: Vec<&str> = plan.jobs.iter().map(|j| j.remote.as_str()).collect();
        assert_eq!(remotes, ["data/a", "data/sub/deeper/b"]);
        assert_eq!(plan.total_bytes(), 3);
        assert_eq!(plan.skipped.len(), 1);
        assert!(plan.skipped[0].ends_with("sub/link"));
    }
}
