//! What a transfer sends: file bytes read once and shared by every concurrent
//! transfer of the same file (a boot storm reads `undionly.kpxe` from disk once),
//! rendered pxelinux configs, and large files read block by block.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// Files up to this size are read into memory whole; larger ones (kernels and
/// initrds fetched by classic pxelinux) are read per block with `pread`.
const MAX_IN_MEMORY: u64 = 64 << 20;
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

    /// Appends up to `size` bytes from `offset` to `out`.
    pub fn read(&self, offset: u64, size: usize, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Content::Memory(m) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
                let end = start.saturating_add(size).min(m.len());
                out.extend_from_slice(&m[start..end]);
                Ok(())
            }
            Content::File { file, len } => {
                let want = (*len).saturating_sub(offset).min(size as u64) as usize;
                let at = out.len();
                out.resize(at + want, 0);
                let mut done = 0;
                while done < want {
                    match file.read_at(&mut out[at + done..], offset + done as u64)? {
                        // The file shrank after the transfer started: a short
                        // block would end the transfer with a silently
                        // truncated file, so it is an error instead.
                        0 => {
                            out.truncate(at);
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file changed while it was sent (now shorter)",
                            ));
                        }
                        n => done += n,
                    }
                }
                Ok(())
            }
        }
    }
}

struct Entry {
    modified: Option<SystemTime>,
    len: u64,
    data: Weak<[u8]>,
    /// A strong reference for small files, so they stay cached between storms.
    keep: Option<Arc<[u8]>>,
}

/// Cache of file contents keyed by path, valid while the file's size and
/// modification time are unchanged.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
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
        let owned = path.to_path_buf();
        let bytes = tokio::fs::read(&owned).await?;
        let data: Arc<[u8]> = Arc::from(bytes);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= 4 * KEEP_COUNT {
            entries.retain(|_, e| e.keep.is_some() || e.data.strong_count() > 0);
        }
        let kept = entries.values().filter(|e| e.keep.is_some()).count();
        let keep = (data.len() as u64 <= KEEP_SIZE && kept < KEEP_COUNT).then(|| data.clone());
        entries.insert(
            owned,
            Entry {
                modified,
                len: data.len() as u64,
                data: Arc::downgrade(&data),
                keep,
            },
        );
        Ok(Content::Memory(data))
    }

    fn cached(&self, path: &Path, len: u64, modified: Option<SystemTime>) -> Option<Arc<[u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
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

    #[test]
    fn reads_clamp_to_the_end() {
        let c = Content::Memory(Arc::from(&b"abcdef"[..]));
        let mut out = vec![9];
        c.read(4, 10, &mut out).unwrap();
        assert_eq!(out, b"\x09ef");
        out.clear();
        c.read(100, 10, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
