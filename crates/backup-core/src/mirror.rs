//! A local copy of a database's newest snapshot image, in the page-hash
//! cache folder: the previous version of every page a run changes, which
//! the run needs to store the change as an XOR delta ([`crate::xor_pack`]).
//! It costs one database's size of local disk.
//!
//! A run never writes the copy itself: it stages its pages beside it (the
//! whole image after a full read, else the pages it changed), and the next
//! run applies them only if a sink's newest snapshot is the staged image
//! (by its page-hash digest), else drops them. So a run killed before its
//! manifest leaves the copy at the snapshot the catalog still lists, and
//! one killed after it leaves pages the next run applies.
//!
//! Nothing here is trusted either: before a chain builds deltas on a page
//! of the copy, the page's hash must equal the previous snapshot's hash of
//! it ([`Mirror::matches`]). A copy lost or edited, or left at another
//! sink's newer image, is therefore a mismatch, and that chain starts a new
//! full base.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::incremental::{PageHash, page_hash};

/// The local image of one database (by label).
pub(crate) struct Mirror {
    file: File,
    page_size: u64,
    path: PathBuf,
    /// The copy was missing when opened: staged changed pages have nothing
    /// to apply to.
    created: bool,
}

fn private(path: &Path, truncate: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
}

/// A file next to the image: `<label>.image.<suffix>`.
fn beside(image: &Path, suffix: &str) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

impl Mirror {
    /// Open (or create, private) the copy of `label`'s image in `dir`.
    pub fn open(dir: &Path, label: &str, page_size: u64) -> io::Result<Self> {
        crate::fsutil::create_dir_all_mode(dir, 0o700)?;
        let path = dir.join(format!("{label}.image"));
        let created = !path.exists();
        Ok(Self {
            file: private(&path, false)?,
            page_size,
            path,
            created,
        })
    }

    /// Its page size.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Page `n` into `buf`; zeros past the copy's end.
    pub fn read(&self, n: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let at = n * self.page_size;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], at + done as u64)? {
                0 => break,
                k => done += k,
            }
        }
        Ok(())
    }

    /// Whether page `n` of the copy hashes to `hash`; `buf` is scratch.
    pub fn matches(&self, n: u64, hash: &PageHash, buf: &mut [u8]) -> io::Result<bool> {
        self.read(n, buf)?;
        Ok(&page_hash(buf) == hash)
    }

    /// Apply what the last run staged if `published` (the page-hash digests
    /// of the sinks' newest snapshots) names its image, else drop it.
    pub fn settle(&mut self, published: &[&str]) -> io::Result<()> {
        let marker = beside(&self.path, "staged");
        let (whole, pages) = (beside(&self.path, "next"), beside(&self.path, "log"));
        let staged = std::fs::read_to_string(&marker).ok();
        let fields: Vec<&str> = staged.as_deref().unwrap_or("").split_whitespace().collect();
        let applies = matches!(fields.as_slice(), [kind, digest, _]
            if published.contains(digest) && (*kind == "image" || !self.created));
        if applies {
            let count: u64 = fields[2]
                .parse()
                .map_err(|_| io::Error::other("staged page count"))?;
            if fields[0] == "image" {
                std::fs::rename(&whole, &self.path)?;
                self.file = private(&self.path, false)?;
            } else {
                self.apply_log(&pages)?;
            }
            self.file.set_len(count * self.page_size)?;
            self.file.sync_all()?;
        }
        for f in [&marker, &whole, &pages] {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_log(&self, log: &Path) -> io::Result<()> {
        let mut r = io::BufReader::new(File::open(log)?);
        let mut page = vec![0u8; self.page_size as usize];
        let mut n = [0u8; 8];
        loop {
            match r.read_exact(&mut n) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                other => other?,
            }
            r.read_exact(&mut page)?;
            self.file
                .write_all_at(&page, u64::from_le_bytes(n) * self.page_size)?;
        }
    }

    /// Start staging this run's image: `whole` when every page will be
    /// given, else only the changed ones.
    pub fn stage(&self, whole: bool) -> io::Result<Staging> {
        let _ = std::fs::remove_file(beside(&self.path, "staged"));
        let path = beside(&self.path, if whole { "next" } else { "log" });
        Ok(Staging {
            out: BufWriter::new(private(&path, true)?),
            whole,
            image: self.path.clone(),
        })
    }
}

/// A run's pages on their way to the local image.
pub(crate) struct Staging {
    out: BufWriter<File>,
    whole: bool,
    image: PathBuf,
}

impl Staging {
    /// Page `n` of the new image (in page order; for a whole image, every
    /// page).
    pub fn page(&mut self, n: u64, page: &[u8]) -> io::Result<()> {
        if !self.whole {
            self.out.write_all(&n.to_le_bytes())?;
        }
        self.out.write_all(page)
    }

    /// Make the staged pages durable and mark them as the image whose page
    /// hashes' digest is `digest`, `pages` long; the next run applies them
    /// if a sink published it.
    pub fn finish(self, digest: &str, pages: u64) -> io::Result<()> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let kind = if self.whole { "image" } else { "pages" };
        crate::fsutil::atomic_write_mode(
            &beside(&self.image, "staged"),
            format!("{kind} {digest} {pages}\n").as_bytes(),
            0o600,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 512;

    fn stage_pages(m: &Mirror, pages: &[(u64, u8)], digest: &str, count: u64) {
        let mut s = m.stage(false).unwrap();
        for &(n, byte) in pages {
            s.page(n, &[byte; PAGE as usize]).unwrap();
        }
        s.finish(digest, count).unwrap();
    }

    #[test]
    fn staged_pages_apply_only_onto_the_copy_they_were_diffed_against() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mirror::open(dir.path(), "app", PAGE).unwrap();
        let mut s = m.stage(true).unwrap();
        for n in 0..4 {
            s.page(n, &[1; PAGE as usize]).unwrap();
        }
        s.finish("d1", 4).unwrap();
        m.settle(&["d1"]).unwrap();
        stage_pages(&m, &[(2, 7)], "d2", 4);

        // Not published: dropped, the copy stays at d1.
        let mut m = Mirror::open(dir.path(), "app", PAGE).unwrap();
        m.settle(&["other"]).unwrap();
        let mut buf = vec![0u8; PAGE as usize];
        m.read(2, &mut buf).unwrap();
        assert_eq!(buf[0], 1);

        stage_pages(&m, &[(2, 7)], "d2", 4);
        let mut m = Mirror::open(dir.path(), "app", PAGE).unwrap();
        m.settle(&["d2"]).unwrap();
        m.read(2, &mut buf).unwrap();
        assert_eq!(buf[0], 7);

        // The copy lost: the changed pages alone are not an image, so they
        // are dropped rather than written into an empty file.
        stage_pages(&m, &[(3, 9)], "d3", 4);
        std::fs::remove_file(dir.path().join("app.image")).unwrap();
        let mut m = Mirror::open(dir.path(), "app", PAGE).unwrap();
        m.settle(&["d3"]).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("app.image"))
                .unwrap()
                .len(),
            0
        );
        assert!(!dir.path().join("app.image.log").exists());
        assert!(!dir.path().join("app.image.staged").exists());
    }
}
