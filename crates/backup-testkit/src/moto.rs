//! A real S3 server for tests: moto's `moto_server` (pinned in
//! `scripts/test.sh`, installed into `<repo>/.venv-moto`), one private
//! instance per test, on 127.0.0.1 at a free port.
//!
//! ```no_run
//! let moto = backup_testkit::moto::Moto::start().unwrap();
//! let sink = backup_s3::S3Sink::from_config(&moto.sink_config("backups")).unwrap();
//! ```
//!
//! - Authentication is on: the kit creates an IAM user with the README's
//!   least-privilege backup + prune policy and an access key, for the
//!   sinks and the CLI, and an admin user for the kit itself (creating
//!   buckets, inspecting with boto3). Every request after that must be
//!   signed (wrong keys are refused as by AWS).
//! - Buckets are created by the kit with boto3.
//! - Clients talk to a TCP relay in front of moto. [`Moto::stop`] takes the
//!   server away from them (new connections refused, open ones cut) while
//!   moto keeps running: moto keeps its state in memory only, and a
//!   restarted moto would have forgotten the multipart uploads a test has to
//!   check for. [`Moto::direct_url`] reaches moto itself.
//!
//! It is never skipped: when moto is missing, [`Moto::start`] says how to
//! install it. The process is killed when the value is dropped.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long moto may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The pinned versions `scripts/test.sh` installs.
pub const MOTO_PIN: &str = "moto[server]==5.2.5 boto3==1.44.8";

/// Why moto could not be used.
#[derive(Debug)]
pub struct MotoError(String);

impl fmt::Display for MotoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MotoError {}

fn fail<T>(message: impl Into<String>) -> Result<T, MotoError> {
    Err(MotoError(message.into()))
}

/// The least privileges of a backup and a prune (README, "S3"), given to
/// the test user so every test proves the policy is enough. One addition
/// for moto: it authorises a DeleteObjects call (object_store deletes with
/// it) as `s3:DeleteObject` on the bucket itself, where AWS checks each
/// object, so the bucket statement also allows `s3:DeleteObject`.
pub const BACKUP_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:DeleteObject"],
     "Resource": "arn:aws:s3:::*"},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
     "Resource": "arn:aws:s3:::*/*"}
  ]
}"#;

const SETUP: &str = r#"
import sys, boto3
ep, policy = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=ep, region_name="us-east-1")
iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
iam.create_user(UserName="backup")
iam.put_user_policy(UserName="backup", PolicyName="backup", PolicyDocument=policy)
k = iam.create_access_key(UserName="backup")["AccessKey"]
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
a = iam.create_access_key(UserName="admin")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"], a["AccessKeyId"], a["SecretAccessKey"])
"#;

/// Requests moto serves before it starts checking signatures: the six
/// IAM calls of the setup script.
const SETUP_REQUESTS: &str = "6";

/// A TCP relay: accepts on `port` and copies bytes both ways to `target`.
struct Relay {
    port: u16,
    stopping: Arc<AtomicBool>,
    /// Each open connection's two sockets, by connection number, so that
    /// [`Relay::stop`] can cut them; a connection leaves when both of its
    /// directions have ended (a run of thousands of connections would
    /// otherwise keep every socket open).
    open: Arc<Mutex<HashMap<u64, Vec<TcpStream>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(port: u16, target: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let port = listener.local_addr()?.port();
        let stopping = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<HashMap<u64, Vec<TcpStream>>>> = Arc::default();
        let (stop, conns) = (stopping.clone(), open.clone());
        let acceptor = std::thread::spawn(move || {
            for (id, client) in (0u64..).zip(listener.incoming()) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)) else {
                    continue;
                };
                let kept = [&client, &server]
                    .iter()
                    .filter_map(|s| s.try_clone().ok())
                    .collect();
                conns.lock().unwrap().insert(id, kept);
                let directions = Arc::new(AtomicUsize::new(2));
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    let (conns, directions) = (conns.clone(), directions.clone());
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                        if directions.fetch_sub(1, Ordering::SeqCst) == 1 {
                            conns.lock().unwrap().remove(&id);
                        }
                    });
                }
            }
        });
        Ok(Relay {
            port,
            stopping,
            open,
            acceptor: Some(acceptor),
        })
    }

    /// Refuse new connections and cut the open ones.
    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag and drops the listener.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for s in self.open.lock().unwrap().drain().flat_map(|(_, s)| s) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running moto S3 server with one IAM user.
pub struct Moto {
    python: PathBuf,
    log: tempfile::NamedTempFile,
    port: u16,
    child: Option<Child>,
    relay: Option<Relay>,
    relay_port: u16,
    access_key_id: String,
    secret_access_key: String,
    admin: (String, String),
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto")
            .field("url", &self.url())
            .field("direct_url", &self.direct_url())
            .field("reachable", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

fn free_port() -> Result<u16, MotoError> {
    crate::server::free_port().map_err(MotoError)
}

/// `<repo>/.venv-moto`, where `scripts/test.sh` installs moto and boto3.
pub fn venv() -> PathBuf {
    crate::azurite::repo_root().join(".venv-moto")
}

fn install_hint() -> String {
    let venv = venv();
    format!(
        "moto is missing from {}: run scripts/test.sh, or \
         `python3 -m venv {0} && {0}/bin/pip install '{}' '{}'`, then rerun the tests",
        venv.display(),
        MOTO_PIN.split(' ').next().unwrap_or_default(),
        MOTO_PIN.split(' ').nth(1).unwrap_or_default(),
    )
}

impl Moto {
    /// Start moto on a free port, create the IAM user and wait until it
    /// accepts connections.
    pub fn start() -> Result<Self, MotoError> {
        let server = venv().join("bin/moto_server");
        let python = venv().join("bin/python");
        if !server.exists() || !python.exists() {
            return fail(install_hint());
        }
        let log = tempfile::Builder::new()
            .prefix("moto-")
            .suffix(".log")
            .tempfile()
            .map_err(|e| MotoError(format!("cannot create moto's log: {e}")))?;
        let port = free_port()?;
        let out = File::options()
            .append(true)
            .open(log.path())
            .map_err(|e| MotoError(format!("cannot open moto's log: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| MotoError(format!("cannot open moto's log: {e}")))?;
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS)
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| MotoError(format!("cannot run {}: {e}", server.display())))?;
        let mut moto = Moto {
            python,
            log,
            port,
            child: Some(child),
            relay: None,
            relay_port: 0,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            admin: (String::new(), String::new()),
        };
        moto.wait_ready()?;
        let out = moto.run_python(SETUP, &[&moto.direct_url(), BACKUP_POLICY], false)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(id), Some(secret), Some(admin_id), Some(admin_secret)) => {
                moto.access_key_id = id.into();
                moto.secret_access_key = secret.into();
                moto.admin = (admin_id.into(), admin_secret.into());
            }
            _ => return fail(format!("moto's IAM setup printed no access key: {text}")),
        }
        let relay = Relay::start(0, port)
            .map_err(|e| MotoError(format!("cannot start the relay in front of moto: {e}")))?;
        moto.relay_port = relay.port;
        moto.relay = Some(relay);
        Ok(moto)
    }

    fn wait_ready(&mut self) -> Result<(), MotoError> {
        let child = self.child.as_mut().expect("launched");
        crate::server::wait_listening("moto", self.port, child, START_TIMEOUT, self.log.path())
            .map_err(MotoError)
    }

    /// The end of moto's log (for failure messages).
    pub fn log_tail(&self) -> String {
        crate::server::log_tail(self.log.path())
    }

    /// Run a Python snippet in moto's virtual environment (boto3 installed)
    /// with `MOTO_URL` (direct) and, when `admin`, the admin's credentials.
    fn run_python(&self, code: &str, args: &[&str], admin: bool) -> Result<Output, MotoError> {
        let mut cmd = Command::new(&self.python);
        cmd.arg("-c").arg(code).args(args);
        cmd.env("MOTO_URL", self.direct_url())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        if admin {
            cmd.env("AWS_ACCESS_KEY_ID", &self.admin.0)
                .env("AWS_SECRET_ACCESS_KEY", &self.admin.1);
        }
        let out = cmd
            .output()
            .map_err(|e| MotoError(format!("cannot run {}: {e}", self.python.display())))?;
        if !out.status.success() {
            return fail(format!(
                "python ({}) failed: {}\nmoto's log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ));
        }
        Ok(out)
    }

    /// Run a boto3 snippet as the admin; `s3` is a ready client talking to
    /// moto directly. Returns its standard output.
    pub fn boto3(&self, code: &str, args: &[&str]) -> Result<String, MotoError> {
        let code = format!(
            "import os, sys, boto3\ns3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])\n{code}"
        );
        let out = self.run_python(&code, args, true)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Create a bucket (as the admin: the backup user may not).
    pub fn create_bucket(&self, name: &str) -> Result<(), MotoError> {
        self.boto3("s3.create_bucket(Bucket=sys.argv[1])", &[name])
            .map(drop)
    }

    /// Keys of the multipart uploads still open in `bucket`, as boto3 lists
    /// them (a client nobody here wrote).
    pub fn open_multipart_uploads(&self, bucket: &str) -> Result<Vec<String>, MotoError> {
        let out = self.boto3(
            "for u in s3.list_multipart_uploads(Bucket=sys.argv[1]).get('Uploads', []):\n    print(u['Key'])",
            &[bucket],
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The URL clients use (through the relay), e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay_port)
    }

    /// moto itself, bypassing the relay (reachable while [`stop`](Self::stop)ped).
    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The test user's access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The test user's secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// `AWS_*` variables for a process that should use this server's user.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// An `[s3]` section (as TOML) pointing at this server through the relay.
    pub fn section(&self, bucket: &str, extra: &str) -> String {
        format!(
            "[s3]\nbucket = {bucket:?}\nendpoint = {:?}\nallow_http = true\nregion = \"us-east-1\"\nmax_retries = 1\npart_size_mib = 5\n{extra}",
            self.url()
        )
    }

    /// Settings for an in-process sink with the test user's credentials.
    pub fn sink_config(&self, bucket: &str) -> backup_s3::S3Config {
        let text = format!(
            "bucket = {bucket:?}\nendpoint = {:?}\nallow_http = true\nregion = \"us-east-1\"\nmax_retries = 1\naccess_key_id = {:?}\nsecret_access_key = {:?}\n",
            self.url(),
            self.access_key_id,
            self.secret_access_key
        );
        toml::from_str(&text).expect("valid [s3] section")
    }

    /// Take the server away from clients: new connections are refused and
    /// open ones cut, as when the server stops. moto keeps its state.
    pub fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
    }

    /// Make the server reachable again at the same URL.
    pub fn restart(&mut self) -> Result<(), MotoError> {
        self.stop();
        let relay = Relay::start(self.relay_port, self.port)
            .map_err(|e| MotoError(format!("cannot reopen port {}: {e}", self.relay_port)))?;
        self.relay = Some(relay);
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
