//! What a transfer sends: small files read once and shared by every concurrent
//! transfer of the same file (a boot storm reads `undionly.kpxe` from disk once),
//! rendered pxelinux configs, and large files read from the page cache in
//! chunks as the transfer goes ([`Blocks`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::sync::lock;

/// Files up to this size are read into memory whole (boot loaders and iPXE
/// binaries, fetched by many machines at once); larger ones (kernels and
/// initrds fetched by classic pxelinux) are read as they are sent. Reading a
/// 20 MiB file whole first cost 15% of a lockstep transfer's CPU (page faults
/// on the fresh buffer) and delayed its first block.
const MAX_IN_MEMORY: u64 = 4 << 20;
/// One `pread` per this many bytes of a large file: 44 blocks of 1468 bytes,
/// and at most 32 MiB over all [`super::MAX_TRANSFERS`] transfers.
const CHUNK: usize = 64 << 10;
/// Files up to this size stay cached after their last transfer ends.
const KEEP_SIZE: u64 = 1 << 20;
/// At most this many files are kept cached (so at most 64 MiB).
const KEEP_COUNT: usize = 64;

/// The bytes of one transfer.
#[derive(Debug, Clone)]
pub enum Content {
    Memory(Arc<[u8]>),
    File { file: Arc<File>, len: u64 },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Memory(m) => m.len() as u64,
            Content::File { len, .. } => *len,
        }
    }

    /// A reader of this content's blocks for one transfer.
    pub fn blocks(&self) -> Blocks<'_> {
        Blocks {
            content: self,
            chunk: Vec::new(),
            chunk_at: 0,
        }
    }
}

/// Reads one transfer's blocks: in order, or stepping back a window for a
/// retransmission. A large file is read a [`CHUNK`] at a time.
pub struct Blocks<'a> {
    content: &'a Content,
    chunk: Vec<u8>,
    /// The file offset of `chunk[0]`.
    chunk_at: u64,
}

impl Blocks<'_> {
    /// Appends up to `size` bytes from `offset` to `out` (fewer at the end).
    pub fn read(&mut self, offset: u64, size: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let (file, len) = match self.content {
            Content::Memory(m) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
                let end = start.saturating_add(size).min(m.len());
                out.extend_from_slice(&m[start..end]);
                return Ok(());
            }
            Content::File { file, len } => (file, *len),
        };
        let want = len.saturating_sub(offset).min(size as u64) as usize;
        if want == 0 {
            return Ok(());
        }
        let buffered = offset >= self.chunk_at
            && offset - self.chunk_at + want as u64 <= self.chunk.len() as u64;
        if !buffered {
            let fill = (len - offset).min(CHUNK.max(want) as u64) as usize;
            self.chunk.resize(fill, 0);
            self.chunk_at = offset;
            if let Err(e) = read_exact_at(file, &mut self.chunk, offset) {
                self.chunk.clear();
                return Err(e);
            }
        }
        let start = (offset - self.chunk_at) as usize;
        out.extend_from_slice(&self.chunk[start..start + want]);
        Ok(())
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            // The file shrank after the transfer started: a short block would
            // end the transfer with a silently truncated file, so it is an
            // error instead.
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file changed while it was sent (now shorter)",
                ))
            }
            n => done += n,
        }
    }
    Ok(())
}

struct Entry {
    modified: Option<SystemTime>,
    len: u64,
    data: Weak<[u8]>,
    /// A strong reference for small files, so they stay cached between storms.
    keep: Option<Arc<[u8]>>,
}

/// A file as `stat` saw it: a load is shared only by requests that saw the
/// same size and modification time.
type Version = (PathBuf, u64, Option<SystemTime>);
/// One read of a file, shared by the requests that wait for it.
type Load = Arc<OnceCell<Arc<[u8]>>>;

/// Cache of file contents keyed by path, valid while the file's size and
/// modification time are unchanged.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    /// Reads in progress. A rack's RRQs arrive within milliseconds, before
    /// the first read of a file has finished: without this each of them read
    /// the whole file into its own buffer (200 first fetches of a 1 MB file
    /// raised peak RSS by 59-67 MB).
    loading: Mutex<HashMap<Version, Load>>,
}

impl Cache {
    pub async fn get(&self, path: &Path) -> io::Result<Content> {
        let meta = std::fs::metadata(path)?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        if len > MAX_IN_MEMORY {
            let file = File::open(path)?;
            return Ok(Content::File {
                file: Arc::new(file),
                len,
            });
        }
        if let Some(data) = self.cached(path, len, modified) {
            return Ok(Content::Memory(data));
        }
        let version = (path.to_path_buf(), len, modified);
        let load = lock(&self.loading)
            .entry(version.clone())
            .or_default()
            .clone();
        // One request reads; the others wait for its bytes. If that read
        // fails, the next waiter tries its own.
        let loaded = load
            .get_or_try_init(|| async { tokio::fs::read(path).await.map(Arc::from) })
            .await
            .cloned();
        // The first request back files the bytes for later ones (before the
        // load is forgotten, so that no request in between reads again), or
        // forgets a failed load so that the map does not keep it.
        let mut loading = lock(&self.loading);
        if loading.get(&version).is_some_and(|l| Arc::ptr_eq(l, &load)) {
            if let Ok(data) = &loaded {
                self.remember(&version, data);
            }
            loading.remove(&version);
        }
        Ok(Content::Memory(loaded?))
    }

    /// Records loaded bytes so that later requests share them.
    fn remember(&self, (path, _, modified): &Version, data: &Arc<[u8]>) {
        let mut entries = lock(&self.entries);
        if entries.len() >= 4 * KEEP_COUNT {
            entries.retain(|_, e| e.keep.is_some() || e.data.strong_count() > 0);
        }
        let kept = entries.values().filter(|e| e.keep.is_some()).count();
        let keep = (data.len() as u64 <= KEEP_SIZE && kept < KEEP_COUNT).then(|| data.clone());
        entries.insert(
            path.clone(),
            Entry {
                modified: *modified,
                len: data.len() as u64,
                data: Arc::downgrade(data),
                keep,
            },
        );
    }

    fn cached(&self, path: &Path, len: u64, modified: Option<SystemTime>) -> Option<Arc<[u8]>> {
        let entries = lock(&self.entries);
        let e = entries.get(path)?;
        if e.len != len || e.modified != modified || modified.is_none() {
            return None;
        }
        e.data.upgrade()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cached_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let cache = Cache::default();
        let Content::Memory(a) = cache.get(&p).await.unwrap() else {
            panic!()
        };
        let Content::Memory(b) = cache.get(&p).await.unwrap() else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a, &b));
        std::fs::write(&p, b"three").unwrap();
        let Content::Memory(c) = cache.get(&p).await.unwrap() else {
            panic!()
        };
        assert_eq!(&*c, b"three");
    }

    /// A storm's first requests arrive before the first read is done: they
    /// share that one read instead of each reading the file.
    #[tokio::test]
    async fn concurrent_first_requests_share_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ipxe.efi");
        std::fs::write(&p, vec![7u8; 300_000]).unwrap();
        let cache = Arc::new(Cache::default());
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, p) = (cache.clone(), p.clone());
            requests.spawn(async move { cache.get(&p).await.unwrap() });
        }
        let mut first: Option<Arc<[u8]>> = None;
        while let Some(got) = requests.join_next().await {
            let Content::Memory(data) = got.unwrap() else {
                panic!("a small file is served from memory")
            };
            let first = first.get_or_insert_with(|| data.clone());
            assert!(Arc::ptr_eq(first, &data), "a second copy was read");
        }
        assert!(lock(&cache.loading).is_empty());
    }

    #[test]
    fn reads_clamp_to_the_end() {
        let c = Content::Memory(Arc::from(&b"abcdef"[..]));
        let mut out = vec![9];
        c.blocks().read(4, 10, &mut out).unwrap();
        assert_eq!(out, b"\x09ef");
        out.clear();
        c.blocks().read(100, 10, &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// A large file read in chunks gives the same bytes as the file, in
    /// order and stepping back (retransmissions), and a file that shrank
    /// mid-transfer is an error, never a short block.
    #[tokio::test]
    async fn large_files_are_read_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let bytes: Vec<u8> = (0..MAX_IN_MEMORY + 5000).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let content = Cache::default().get(&p).await.unwrap();
        assert!(matches!(content, Content::File { .. }));
        let mut blocks = content.blocks();
        let mut got = Vec::new();
        let bs = 1468u64;
        for block in (0..=content.len() / bs).chain([3, 2, 500, 44, 45]) {
            let mut out = Vec::new();
            blocks.read(block * bs, bs as usize, &mut out).unwrap();
            let start = (block * bs) as usize;
            let end = (start + bs as usize).min(bytes.len());
            assert_eq!(out, bytes[start..end], "block {block}");
            if got.len() == start {
                got.extend(out);
            }
        }
        assert_eq!(got, bytes);

        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(100_000)
            .unwrap();
        let mut blocks = content.blocks();
        let mut out = Vec::new();
        blocks.read(0, 1468, &mut out).unwrap();
        let err = blocks.read(200_000, 1468, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
