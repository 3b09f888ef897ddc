//! What a client asked of Azurite, counted from Azurite's own request log:
//! `--debug` writes one `RequestMethod=… RequestURL=…` line per request
//! (among about 25 lines of detail), here into a FIFO that a thread reads
//! and tallies, so a long measurement neither fills the disk nor depends on
//! the client's own idea of what it sent (retries, multipart parts and
//! batches are each a request here; the operations inside a batch are not).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::AzuriteError;

/// Requests so far, by kind: the method, then `list <folder>`, `batch`,
/// `chain` (a chain claim) or the key's last extension, e.g. `PUT chain`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounts(Arc<Mutex<BTreeMap<String, u64>>>);

impl RequestCounts {
    /// Make a FIFO at `fifo` and tally what Azurite writes into it, for
    /// as long as the test runs (a restarted Azurite opens it again).
    pub(super) fn listen(fifo: &Path) -> Result<Self, AzuriteError> {
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
            .map_err(|_| AzuriteError("a FIFO path with a NUL byte".into()))?;
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(AzuriteError(format!(
                "cannot make {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            )));
        }
        let counts = Self::default();
        let (tally, fifo) = (counts.clone(), fifo.to_path_buf());
        std::thread::spawn(move || {
            // Each open waits for Azurite to open the other end; end of
            // file is Azurite stopping.
            while let Ok(f) = std::fs::File::open(&fifo) {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    if let Some(k) = kind(&line) {
                        *tally.0.lock().unwrap().entry(k).or_default() += 1;
                    }
                }
            }
        });
        Ok(counts)
    }

    /// A copy of the tally.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// The kind of request a log line records, if it records one: the method,
/// then the call for listings (with the prefix's last folder) and batches,
/// else what the key names: `chain` for a chain claim, else its name's
/// last extension, e.g. `PUT chain`, `GET sha256` or `GET list pending`.
fn kind(line: &str) -> Option<String> {
    let rest = line
        .split("BlobStorageContextMiddleware: RequestMethod=")
        .nth(1)?;
    let (method, rest) = rest.split_once(" RequestURL=")?;
    let url = rest.split_whitespace().next()?;
    // The operations inside a batch are logged too, with the port in their
    // URL (a request's own URL has none): they are not requests.
    if url.split('/').nth(2)?.contains(':') {
        return None;
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    // http://host/<account>/<container>/<key>
    let key = path.splitn(6, '/').nth(5).unwrap_or("");
    let what = if query.contains("comp=list") {
        let prefix = query
            .split('&')
            .find_map(|p| p.strip_prefix("prefix="))
            .unwrap_or("")
            .replace("%2F", "/");
        let folder = prefix
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        format!("list {folder}")
    } else if query.contains("comp=batch") {
        "batch".into()
    } else {
        let mut parts = key.rsplit('/');
        let name = parts.next().unwrap_or("");
        let named = match parts.next() {
            Some("chain") => "chain",
            _ => name.rsplit_once('.').map_or("", |(_, ext)| ext),
        };
        let block = if query.contains("comp=block") {
            "block "
        } else {
            ""
        };
        format!("{block}{named}")
    };
    Some(format!("{method} {what}").trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::kind;

    #[test]
    fn kinds_name_the_method_the_call_and_the_folder() {
        let line = |m: &str, url: &str| {
            format!(
                "2026-12-07T23:31:02.723Z a9da info: BlobStorageContextMiddleware: \
                 RequestMethod={m} RequestURL=http://127.0.0.1/devstoreaccount1/backups{url} \
                 RequestHeaders:{{}} ClientIP=127.0.0.1"
            )
        };
        let k = |m: &str, url: &str| kind(&line(m, url)).unwrap();
        assert_eq!(k("GET", "/sqlite/manifests/chain/ab12"), "GET chain");
        assert_eq!(k("PUT", "/sqlite/manifests/r1.json.sha256"), "PUT sha256");
        assert_eq!(
            k("PUT", "/sqlite/app/r1.000.pack?comp=block&blockid=AA"),
            "PUT block pack"
        );
        assert_eq!(
            k(
                "GET",
                "?restype=container&comp=list&prefix=sqlite%2Fmanifests%2Fpending%2F"
            ),
            "GET list pending"
        );
        assert_eq!(k("POST", "?restype=container&comp=batch"), "POST batch");
        assert_eq!(k("HEAD", "/top"), "HEAD");
        let inside_batch = "info: BlobStorageContextMiddleware: RequestMethod=DELETE \
             RequestURL=http://127.0.0.1:18010/devstoreaccount1/backups/sqlite/manifests/x.pending";
        assert_eq!(kind(inside_batch), None);
        assert_eq!(kind("info: something else"), None);
    }
}
