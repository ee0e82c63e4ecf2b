//! The agent's side of file transfers: streaming between a [`ServiceTree`]
//! and the network for the file RPCs (reads, uploads, listings): the file system work runs on a blocking
//! thread, connected to the async side by a short queue of chunks, so
//! hashing and disk I/O overlap with TLS and memory stays at a few chunks
//! whatever the file's size.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mcp_core::wire::CHUNK_SIZE;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::{
    Committed, FileKind, FilesError, MAX_WALK_DEPTH, Metadata, RemotePath, ServiceTree,
    UploadOptions,
};

/// Chunks queued between the blocking thread and the network, each way.
const QUEUE: usize = 8;

/// How long a transfer's blocking thread waits for the network to take or
/// give the next chunk (a reader with a closed window, a sender that went
/// quiet) before the transfer is abandoned: no blocking thread is parked
/// longer by a stalled peer.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands `item` to the async side from a blocking thread, waiting at most
/// [`STALL_TIMEOUT`]; `false` when it was not taken (the receiver is gone
/// or stalled), and the blocking work should stop.
fn hand_over<T>(runtime: &tokio::runtime::Handle, tx: &mpsc::Sender<T>, item: T) -> bool {
    runtime
        .block_on(tx.send_timeout(item, STALL_TIMEOUT))
        .is_ok()
}

/// An item of a download, after its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadItem {
    /// The next chunk of content.
    Data(Bytes),
    /// The end: the SHA-256 of every chunk sent.
    Done([u8; 32]),
}

/// Opens `path` for reading and streams it from a blocking thread: its
/// metadata, then chunks of at most [`CHUNK_SIZE`] bytes, then the digest.
/// Dropping the receiver stops the reading.
pub async fn read_file(
    tree: Arc<ServiceTree>,
    path: RemotePath,
) -> Result<(Metadata, mpsc::Receiver<Result<ReadItem, FilesError>>), FilesError> {
    let (opened_tx, opened_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(QUEUE);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut file = match tree.open_read(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        if opened_tx.send(Ok(file.metadata().clone())).is_err() {
            return;
        }
        let mut hasher = Sha256::new();
        loop {
            let mut buf = BytesMut::zeroed(CHUNK_SIZE);
            let n = match mcp_core::fsutil::read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(source) => {
                    let error = FilesError::Io {
                        op: "read",
                        path: path.to_string(),
                        source,
                    };
                    hand_over(&runtime, &tx, Err(error));
                    return;
                }
            };
            if n == 0 {
                hand_over(&runtime, &tx, Ok(ReadItem::Done(hasher.finalize().into())));
                return;
            }
            buf.truncate(n);
            hasher.update(&buf);
            if !hand_over(&runtime, &tx, Ok(ReadItem::Data(buf.freeze()))) {
                return;
            }
        }
    });
    let metadata = opened_rx.await.map_err(|_| FilesError::Interrupted)??;
    Ok((metadata, rx))
}

/// An item of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteItem {
    /// The next chunk of content.
    Data(Bytes),
    /// The end, with the sender's SHA-256 of everything it sent: the file
    /// is put in place only if it matches.
    Finish([u8; 32]),
}

/// An upload in progress on a blocking thread: feed it with
/// [`FileWriter::send`], end it with [`FileWriter::finish`]. Dropped
/// unfinished, the upload is abandoned and the target left as it was.
pub struct FileWriter {
    tx: mpsc::Sender<WriteItem>,
    done: oneshot::Receiver<Result<Committed, FilesError>>,
}

impl FileWriter {
    /// Starts an atomic upload of `path` (see [`ServiceTree::upload`]).
    pub async fn start(
        tree: Arc<ServiceTree>,
        path: RemotePath,
        options: UploadOptions,
    ) -> Result<FileWriter, FilesError> {
        let (opened_tx, opened_rx) = oneshot::channel();
        let (tx, mut rx) = mpsc::channel::<WriteItem>(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut upload = match tree.upload(&path, options) {
                Ok(u) => u,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            if opened_tx.send(Ok(())).is_err() {
                return;
            }
            let result = loop {
                let next = runtime.block_on(tokio::time::timeout(STALL_TIMEOUT, rx.recv()));
                let Ok(next) = next else {
                    break Err(FilesError::Interrupted);
                };
                match next {
                    Some(WriteItem::Data(chunk)) => {
                        if let Err(e) = upload.write_chunk(&chunk) {
                            break Err(e);
                        }
                    }
                    Some(WriteItem::Finish(sha256)) => break upload.commit(Some(sha256)),
                    // The sender went away: the upload is dropped, which
                    // removes its temporary file.
                    None => break Err(FilesError::Interrupted),
                }
            };
            let _ = done_tx.send(result);
        });
        opened_rx.await.map_err(|_| FilesError::Interrupted)??;
        Ok(FileWriter { tx, done })
    }

    /// Queues a chunk; waits while the queue is full. Fails with the
    /// upload's error once a write failed.
    pub async fn send(&mut self, chunk: Bytes) -> Result<(), FilesError> {
        if self.tx.send(WriteItem::Data(chunk)).await.is_err() {
            return Err(self
                .outcome()
                .await
                .err()
                .unwrap_or(FilesError::Interrupted));
        }
        Ok(())
    }

    /// Ends the upload with the sender's digest and waits for the file to be
    /// in place.
    pub async fn finish(mut self, sha256: [u8; 32]) -> Result<Committed, FilesError> {
        // A closed queue means the writer already failed; its error follows.
        let _ = self.tx.send(WriteItem::Finish(sha256)).await;
        self.outcome().await
    }

    async fn outcome(&mut self) -> Result<Committed, FilesError> {
        (&mut self.done)
            .await
            .unwrap_or(Err(FilesError::Interrupted))
    }
}

/// Lists `path` on a blocking thread, in batches of at most `batch` entries
/// as the walk goes: a directory's entries (the whole tree beneath it when
/// `recursive`, symlinks listed and never followed), or a file's own entry.
/// An error ends the listing. Dropping the receiver stops the walk.
pub fn list_entries(
    tree: Arc<ServiceTree>,
    path: RemotePath,
    recursive: bool,
    batch: usize,
) -> mpsc::Receiver<Result<Vec<(RemotePath, Metadata)>, FilesError>> {
    let (tx, rx) = mpsc::channel(2);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let fail = |e: FilesError| {
            hand_over(&runtime, &tx, Err(e));
        };
        let top = match tree.stat(&path) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        if top.kind != FileKind::Dir {
            hand_over(&runtime, &tx, Ok(vec![(path, top)]));
            return;
        }
        let entries: Box<dyn Iterator<Item = Result<(RemotePath, Metadata), FilesError>>> =
            if recursive {
                match tree.walk(&path, MAX_WALK_DEPTH) {
                    Ok(w) => Box::new(w.map(|e| e.map(|e| (e.path, e.metadata)))),
                    Err(e) => return fail(e),
                }
            } else {
                match tree.list(&path) {
                    Ok(l) => Box::new(
                        l.map(move |e| e.and_then(|e| Ok((path.join(&e.name)?, e.metadata)))),
                    ),
                    Err(e) => return fail(e),
                }
            };
        let batch = batch.max(1);
        let mut pending = Vec::with_capacity(batch);
        for item in entries {
            match item {
                Ok(entry) => pending.push(entry),
                Err(e) => return fail(e),
            }
            if pending.len() == batch && !hand_over(&runtime, &tx, Ok(std::mem::take(&mut pending)))
            {
                return;
            }
        }
        if !pending.is_empty() {
            hand_over(&runtime, &tx, Ok(pending));
        }
    });
    rx
}
