//! Incomplete multipart uploads: S3 keeps (and bills) the parts of an
//! upload that was neither completed nor aborted, e.g. when the process was
//! killed or the network went away before the writer could abort.
//!
//! object_store can abort an upload it knows the id of
//! ([`MultipartStore::abort_multipart`]) but cannot list them, so listing is
//! one `GET ?uploads` (ListMultipartUploads), signed by object_store's own
//! SigV4 [`AwsAuthorizer`] with the store's current credentials.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ClientOptions, MultipartId};

use backup_object_store::{IncompleteUpload, Janitor};

#[derive(Debug)]
pub(crate) struct S3Janitor {
    pub store: AmazonS3,
    pub region: String,
    pub bucket_url: String,
    pub client_options: ClientOptions,
    /// Only uploads started longer ago than this are aborted.
    pub abort_after: Duration,
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: message.into(),
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters kept), as
/// SigV4 canonicalisation expects.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One page of a ListMultipartUploads answer: uploads and, when truncated,
/// the markers of the next page.
pub(crate) fn parse_page(xml: &str) -> (Vec<IncompleteUpload>, Option<(String, String)>) {
    let mut uploads = Vec::new();
    for block in xml.split("<Upload>").skip(1) {
        let block = block.split("</Upload>").next().unwrap_or_default();
        if let (Some(path), Some(upload_id)) = (element(block, "Key"), element(block, "UploadId")) {
            uploads.push(IncompleteUpload {
                path,
                upload_id,
                initiated: element(block, "Initiated").unwrap_or_default(),
            });
        }
    }
    let truncated = element(xml, "IsTruncated").is_some_and(|t| t == "true");
    let next = truncated
        .then(|| {
            Some((
                element(xml, "NextKeyMarker")?,
                element(xml, "NextUploadIdMarker").unwrap_or_default(),
            ))
        })
        .flatten();
    (uploads, next)
}

/// Whether an upload the store says was `initiated` then started at or
/// before `cutoff`. An unreadable date counts as recent: never abort what
/// might be another host's upload in progress.
fn started_before(initiated: &str, cutoff: jiff::Timestamp) -> bool {
    initiated
        .parse::<jiff::Timestamp>()
        .is_ok_and(|t| t <= cutoff)
}

impl S3Janitor {
    async fn list_all(
        self: Arc<Self>,
        prefix: String,
    ) -> object_store::Result<Vec<IncompleteUpload>> {
        let client: HttpClient = ReqwestConnector::default().connect(&self.client_options)?;
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}?prefix={}&uploads=", self.bucket_url, encode(&prefix));
            if let Some((key, id)) = &marker {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(key),
                    encode(id)
                ));
            }
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(&url)
                .body(HttpRequestBody::empty())
                .map_err(|e| generic(format!("bad request {url}: {e}")))?;
            let credential = self.store.credentials().get_credential().await?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut request, None)?;
            let response = client
                .execute(request)
                .await
                .map_err(|e| generic(format!("list multipart uploads: {e}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .bytes()
                .await
                .map_err(|e| generic(format!("list multipart uploads: {e}")))?;
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() {
                let detail = format!(
                    "list multipart uploads: {status}: {}",
                    element(&text, "Code").unwrap_or_default()
                );
                // The same variants object_store gives its own calls, so the
                // error mapping types them without reading the text.
                return Err(match status.as_u16() {
                    401 => object_store::Error::Unauthenticated {
                        path: prefix.clone(),
                        source: detail.into(),
                    },
                    403 => object_store::Error::PermissionDenied {
                        path: prefix.clone(),
                        source: detail.into(),
                    },
                    _ => generic(detail),
                });
            }
            let (page, next) = parse_page(&text);
            out.extend(page.into_iter().filter(|u| u.path.starts_with(&prefix)));
            match next {
                Some(next) if marker.as_ref() != Some(&next) => marker = Some(next),
                _ => return Ok(out),
            }
        }
    }

    async fn abort_old(self: Arc<Self>, prefix: String) -> object_store::Result<usize> {
        let cutoff = jiff::Timestamp::now()
            - jiff::SignedDuration::try_from(self.abort_after).unwrap_or(jiff::SignedDuration::MAX);
        let mut aborted = 0;
        for upload in self.clone().list_all(prefix).await? {
            if !started_before(&upload.initiated, cutoff) {
                continue;
            }
            let id: MultipartId = upload.upload_id.clone();
            match self
                .store
                .abort_multipart(&Path::from(upload.path.as_str()), &id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => aborted += 1,
                Err(e) => return Err(e),
            }
            tracing::info!(
                "aborted incomplete multipart upload of {} started {}",
                upload.path,
                upload.initiated
            );
        }
        Ok(aborted)
    }
}

/// `Janitor` is implemented on the shared handle: the futures own a clone.
#[derive(Debug)]
pub(crate) struct SharedJanitor(pub Arc<S3Janitor>);

impl Janitor for SharedJanitor {
    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'static, object_store::Result<Vec<IncompleteUpload>>> {
        self.0.clone().list_all(prefix).boxed()
    }

    fn abort_stale(&self, prefix: String) -> BoxFuture<'static, object_store::Result<usize>> {
        self.0.clone().abort_old(prefix).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_multipart_uploads_pages() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>
<NextKeyMarker>sqlite/b&amp;c.db</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
<Upload><Key>sqlite/a.db</Key><UploadId>id1</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>
<Upload><Key>sqlite/b&amp;c.db</Key><UploadId>id2</UploadId><Initiated>2026-01-02T00:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let (uploads, next) = parse_page(xml);
        assert_eq!(uploads.len(), 2);
        assert_eq!(uploads[1].path, "sqlite/b&c.db");
        assert_eq!(uploads[0].initiated, "2026-01-01T00:00:00.000Z");
        assert_eq!(next, Some(("sqlite/b&c.db".into(), "id2".into())));
        let (none, next) = parse_page(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        );
        assert!(none.is_empty() && next.is_none());
    }

    #[test]
    fn only_uploads_older_than_the_cutoff_are_stale() {
        let cutoff: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert!(started_before("2026-01-01T23:59:59.000Z", cutoff));
        assert!(!started_before("2026-01-02T00:00:01.000Z", cutoff));
        assert!(!started_before("yesterday", cutoff));
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("sqlite/a b+c"), "sqlite%2Fa%20b%2Bc");
    }
}
