//! A real Azurite blob service for tests, one private instance per test.
//!
//! ```no_run
//! let azurite = backup_testkit::azurite::Azurite::start().unwrap();
//! azurite.create_container("db-backups").unwrap();
//! let cfg = azurite.sink_config("db-backups");
//! let sink = backup_azure::AzureSink::from_config(&cfg).unwrap();
//! ```
//!
//! It runs `<repo>/node_modules/.bin/azurite-blob` (pinned in the repo's
//! `package.json` / `package-lock.json`; `npm ci` at the repo root installs
//! it) on `127.0.0.1` at a free port, with its data in a temporary folder.
//! It is never skipped: when the binary is missing, [`Azurite::start`] says
//! how to install it. The process is killed when the value is dropped.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ClientOptions;
use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};

mod requests;
pub use requests::RequestCounts;

/// How long Azurite may take to accept connections (it needs about 1 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why Azurite could not be used.
#[derive(Debug)]
pub struct AzuriteError(String);

impl fmt::Display for AzuriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AzuriteError {}

fn fail<T>(message: impl Into<String>) -> Result<T, AzuriteError> {
    Err(AzuriteError(message.into()))
}

/// A running (or stopped) Azurite blob service.
pub struct Azurite {
    bin: PathBuf,
    data: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    requests: Option<RequestCounts>,
}

impl fmt::Debug for Azurite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Azurite")
            .field("url", &self.url())
            .field("data", &self.data.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// The repository root (where `package.json` and `node_modules/` live).
pub fn repo_root() -> PathBuf {
    // This crate lives in <repo>/crates/backup-testkit.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn free_port() -> Result<u16, AzuriteError> {
    crate::server::free_port().map_err(AzuriteError)
}

impl Azurite {
    /// Start Azurite on a free port with a fresh data folder and wait until
    /// it accepts connections.
    pub fn start() -> Result<Self, AzuriteError> {
        Self::start_with(false)
    }

    /// [`start`](Self::start), counting every request it serves (see
    /// [`requests`](Self::requests)). Its request log slows it down: for
    /// counting, not timing.
    pub fn start_counting() -> Result<Self, AzuriteError> {
        Self::start_with(true)
    }

    fn start_with(count: bool) -> Result<Self, AzuriteError> {
        let bin = repo_root().join("node_modules/.bin/azurite-blob");
        if !bin.exists() {
            return fail(format!(
                "{} is missing: run `npm ci` in {} to install the pinned Azurite \
                 (needs Node.js >= 20), then rerun the tests",
                bin.display(),
                repo_root().display()
            ));
        }
        let data = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .map_err(|e| AzuriteError(format!("cannot create Azurite's data folder: {e}")))?;
        let mut azurite = Self {
            bin,
            data,
            port: free_port()?,
            child: None,
            requests: None,
        };
        if count {
            azurite.requests = Some(RequestCounts::listen(&azurite.requests_fifo())?);
        }
        azurite.launch()?;
        Ok(azurite)
    }

    /// The requests served so far, when started by
    /// [`start_counting`](Self::start_counting).
    pub fn requests(&self) -> Option<&RequestCounts> {
        self.requests.as_ref()
    }

    fn requests_fifo(&self) -> PathBuf {
        self.data.path().join("requests.fifo")
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("azurite.log")
    }

    fn launch(&mut self) -> Result<(), AzuriteError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| AzuriteError(format!("cannot open Azurite's log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| AzuriteError(format!("cannot open Azurite's log: {e}")))?;
        let mut command = Command::new(&self.bin);
        if self.requests.is_some() {
            command.arg("--debug").arg(self.requests_fifo());
        }
        let child = command
            .arg("--silent")
            .arg("--disableTelemetry")
            .arg("--skipApiVersionCheck")
            .arg("--location")
            .arg(self.data.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| AzuriteError(format!("cannot run {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), AzuriteError> {
        let log = self.log_path();
        let child = self.child.as_mut().expect("launched");
        let waited =
            crate::server::wait_listening("Azurite", self.port, child, START_TIMEOUT, &log);
        if let Err(e) = waited {
            self.kill();
            return fail(e);
        }
        Ok(())
    }

    /// The blob service, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The emulator account's endpoint (`<url>/devstoreaccount1`), for the
    /// `endpoint` setting.
    pub fn account_endpoint(&self) -> String {
        format!("{}/{}", self.url(), backup_azure::AZURITE_ACCOUNT)
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder (kept across [`restart`](Self::restart)).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// An `[azure]` section that points a sink at this instance.
    pub fn sink_config(&self, container: &str) -> backup_azure::AzureConfig {
        let text = format!(
            "container = {container:?}\nuse_emulator = true\nendpoint = {:?}\nmax_retries = 2\n",
            self.account_endpoint()
        );
        toml::from_str(&text).expect("valid [azure] section")
    }

    /// A service SAS token for one container of the emulator account,
    /// signed with its well-known key as the Azure SDKs sign one
    /// (string-to-sign of service version 2020-12-06 and later):
    /// `permissions` such as `racwdl`, `expiry` such as
    /// `2030-01-01T00:00:00Z`, HTTP allowed (Azurite listens on plain HTTP).
    ///
    /// A container SAS rather than an account SAS: it is the least
    /// privilege a backup needs, and Azurite 3.35 refuses account SAS for
    /// the blob batch call object_store deletes with.
    pub fn container_sas(container: &str, permissions: &str, expiry: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let version = "2021-08-06";
        let protocols = "https,http";
        let resource = format!("/blob/{}/{container}", backup_azure::AZURITE_ACCOUNT);
        // Permissions, start, expiry, resource, identifier, IP range,
        // protocols, version, resource type, snapshot, encryption scope,
        // and five response-header overrides.
        let to_sign = [
            permissions,
            "",
            expiry,
            &resource,
            "",
            "",
            protocols,
            version,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let key = b64
            .decode(backup_azure::AZURITE_ACCOUNT_KEY)
            .expect("the emulator key is base64");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        let sig = b64.encode(aws_lc_rs::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        // Base64's three URL-unsafe characters.
        let sig = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!("sv={version}&sr=c&sp={permissions}&se={expiry}&spr={protocols}&sig={sig}")
    }

    /// Create a container (object_store cannot): a `PUT ?restype=container`
    /// signed with the emulator's well-known SharedKey by object_store's own
    /// authorizer. An existing container is fine.
    pub fn create_container(&self, name: &str) -> Result<(), AzuriteError> {
        let url = format!("{}/{name}?restype=container", self.account_endpoint());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AzuriteError(format!("cannot start a runtime: {e}")))?;
        let send_once = || {
            runtime.block_on(async {
                let key = AzureAccessKey::try_new(backup_azure::AZURITE_ACCOUNT_KEY)
                    .map_err(|e| AzuriteError(format!("bad emulator key: {e}")))?;
                let credential = AzureCredential::AccessKey(key);
                let mut request = http::Request::builder()
                    .method(http::Method::PUT)
                    .uri(&url)
                    .header(http::header::CONTENT_LENGTH, "0")
                    .body(HttpRequestBody::empty())
                    .map_err(|e| AzuriteError(format!("bad request for {url}: {e}")))?;
                AzureAuthorizer::new(&credential, backup_azure::AZURITE_ACCOUNT)
                    .try_authorize(&mut request)
                    .map_err(|e| AzuriteError(format!("cannot sign the request: {e}")))?;
                let client = ReqwestConnector::default()
                    .connect(&ClientOptions::new().with_allow_http(true))
                    .map_err(|e| AzuriteError(format!("cannot build an HTTP client: {e}")))?;
                let response = client
                    .execute(request)
                    .await
                    .map_err(|e| AzuriteError(format!("PUT {url}: {e}")))?;
                Ok::<_, AzuriteError>(response.status())
            })
        };
        // Azurite accepts connections a moment before it answers them; on a
        // busy machine (many servers starting at once) the first request can
        // be cut. Tries for up to 30 s, each after the last one failed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            match send_once() {
                Ok(status) => break status,
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        match status.as_u16() {
            201 | 409 => Ok(()),
            other => fail(format!("PUT {url}: HTTP {other}")),
        }
    }

    /// Stop the server: SIGTERM, so that it saves its metadata (Azurite
    /// keeps containers in a database it writes every few seconds), then
    /// SIGKILL if it has not exited within 10 s. Data and port are kept.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let termed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kill the process at once (SIGKILL), as a crash would. Metadata written
    /// in the last few seconds (e.g. a new container) may be lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same data folder.
    pub fn restart(&mut self) -> Result<(), AzuriteError> {
        self.stop();
        self.launch()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}
