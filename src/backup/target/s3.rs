//! The S3 target: `s3://BUCKET/PREFIX/<id>.evb` on any S3-compatible service, through
//! `object_store`. Objects are written with multipart uploads (visible only once complete,
//! aborted on error) and carry the header's ids as user metadata (`x-amz-meta-envault-*`).
//!
//! Credentials: static keys from `ENVAULT_S3_ACCESS_KEY_ID`/`ENVAULT_S3_SECRET_ACCESS_KEY`
//! (optional `ENVAULT_S3_SESSION_TOKEN`), else the `[backup] credentials_file` when one is
//! configured (AWS shared-credentials format, profile `ENVAULT_S3_PROFILE`, `AWS_PROFILE` or
//! `default`), else object_store's own chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the ECS
//! container endpoint, then EC2 instance metadata, refreshed before they expire. Static keys
//! are held in zeroizing strings here and never logged.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, RetryConfig,
};
use tokio::runtime::Handle;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::s3_io::{DownloadReader, MultipartWriter};
use super::{BackupObjectMeta, BackupTarget, ObjectEntry, ObjectWriter, OpenedObject, TargetError};
use crate::backup::format::{self, KeySlot};

const META_BACKUP_ID: &str = "envault-backup-id";
const META_DATABASE_ID: &str = "envault-database-id";
const META_KEY_ID: &str = "envault-backup-key-id";
const META_CREATED_AT: &str = "envault-created-at";
const META_FORMAT: &str = "envault-format";
/// Names the format (and version) of the object's bytes.
const FORMAT_TAG: &str = "EVBK-1";

/// Where and how to reach the bucket (from `[backup]`).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Endpoint URL of an S3-compatible service; empty = AWS.
    pub endpoint: String,
    /// Region; empty = `us-east-1`.
    pub region: String,
    /// AWS shared-credentials file; empty = none.
    pub credentials_file: std::path::PathBuf,
}

/// Access key pair (and optional session token). No Debug: it holds secrets.
struct Credentials {
    access_key_id: Zeroizing<String>,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

fn env_secret(name: &str) -> Option<Zeroizing<String>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Zeroizing::new)
}

fn env_credentials(prefix: &str) -> Option<Credentials> {
    Some(Credentials {
        access_key_id: env_secret(&format!("{prefix}ACCESS_KEY_ID"))?,
        secret_access_key: env_secret(&format!("{prefix}SECRET_ACCESS_KEY"))?,
        session_token: env_secret(&format!("{prefix}SESSION_TOKEN")),
    })
}

/// Reads `profile` from an AWS shared-credentials file (INI: `[profile]`, `key = value`).
fn file_credentials(
    path: &std::path::Path,
    profile: &str,
) -> Result<Option<Credentials>, TargetError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        TargetError::Config(format!(
            "cannot read credentials file {}: {e}",
            path.display()
        ))
    })?);
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Zeroizing::new(value.trim().to_string());
        match key.trim() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        })),
        _ => Err(TargetError::Config(format!(
            "credentials file {} has no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
            path.display()
        ))),
    }
}

/// Static credentials when envault is told about them; `None` leaves the choice to
/// object_store's credential chain (environment, web identity, container, instance metadata).
fn resolve_credentials(settings: &S3Settings) -> Result<Option<Credentials>, TargetError> {
    if let Some(c) = env_credentials("ENVAULT_S3_") {
        return Ok(Some(c));
    }
    if settings.credentials_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let profile = std::env::var("ENVAULT_S3_PROFILE")
        .or_else(|_| std::env::var("AWS_PROFILE"))
        .unwrap_or_else(|_| "default".into());
    file_credentials(&settings.credentials_file, &profile)?
        .map(Some)
        .ok_or_else(|| {
            TargetError::Config(format!(
                "no S3 credentials in {} (profile {profile})",
                settings.credentials_file.display()
            ))
        })
}

/// Installs ring as the process-wide rustls provider, the only one compiled in, which
/// reqwest (under object_store) uses for HTTPS endpoints. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Splits `s3://BUCKET/PREFIX` into bucket and prefix (without surrounding slashes).
pub fn parse_url(url: &str) -> Result<(String, String), TargetError> {
    crate::config::parse_s3_url(url).map_err(TargetError::Config)
}

/// Backups as objects in an S3 bucket.
pub struct S3Target {
    store: Arc<AmazonS3>,
    handle: Handle,
    bucket: String,
    prefix: String,
}

impl S3Target {
    /// Connects lazily (no request is made here). Must be called inside a tokio runtime.
    pub fn new(settings: &S3Settings) -> Result<Self, TargetError> {
        let (bucket, prefix) = parse_url(&settings.url)?;
        let credentials = resolve_credentials(settings)?;
        // Empty: AWS_REGION / AWS_DEFAULT_REGION, else object_store's us-east-1.
        let region = (!settings.region.is_empty()).then_some(settings.region.as_str());
        // Fail within seconds when the service is gone instead of retrying for minutes; the
        // request timeout bounds one part or one whole download.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30 * 60))
            .with_allow_http(settings.endpoint.starts_with("http://"));
        install_crypto_provider();
        // from_env: the AWS_* variables object_store's credential chain reads (keys, session
        // token, web identity, container credentials); instance metadata comes last.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(retry)
            .with_client_options(options);
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        if let Some(credentials) = &credentials {
            builder = builder
                .with_access_key_id(credentials.access_key_id.as_str())
                .with_secret_access_key(credentials.secret_access_key.as_str());
            if let Some(token) = &credentials.session_token {
                builder = builder.with_token(token.as_str());
            }
        }
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint);
        }
        let store = builder
            .build()
            .map_err(|e| TargetError::Config(format!("S3 client: {e}")))?;
        let handle = Handle::try_current()
            .map_err(|_| TargetError::Config("the S3 target needs a tokio runtime".into()))?;
        Ok(Self {
            store: Arc::new(store),
            handle,
            bucket,
            prefix,
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn failed(&self, what: &str, name: &str, e: object_store::Error) -> TargetError {
        let location = self.location(name);
        match e {
            object_store::Error::NotFound { .. } => {
                TargetError::NotFound(format!("the backup object is missing: {location}"))
            }
            other => TargetError::Failed(format!("{what} {location} failed: {other}")),
        }
    }
}

fn read_meta(attributes: &Attributes) -> Option<BackupObjectMeta> {
    let get = |key: &'static str| {
        attributes
            .get(&Attribute::Metadata(Cow::Borrowed(key)))
            .map(|v| v.as_ref().to_string())
    };
    if get(META_FORMAT)? != FORMAT_TAG {
        return None;
    }
    Some(BackupObjectMeta {
        backup_id: Uuid::parse_str(&get(META_BACKUP_ID)?).ok()?,
        database_id: Uuid::parse_str(&get(META_DATABASE_ID)?).ok()?,
        backup_key_id: Uuid::parse_str(&get(META_KEY_ID)?).ok()?,
        created_at: get(META_CREATED_AT)?,
    })
}

fn write_meta(meta: &BackupObjectMeta) -> Attributes {
    let mut attributes = Attributes::new();
    let mut put = |key: &'static str, value: String| {
        attributes.insert(Attribute::Metadata(Cow::Borrowed(key)), value.into());
    };
    put(META_FORMAT, FORMAT_TAG.into());
    put(META_BACKUP_ID, meta.backup_id.to_string());
    put(META_DATABASE_ID, meta.database_id.to_string());
    put(META_KEY_ID, meta.backup_key_id.to_string());
    put(META_CREATED_AT, meta.created_at.clone());
    attributes.insert(
        Attribute::ContentType,
        "application/vnd.envault.backup".into(),
    );
    attributes
}

impl BackupTarget for S3Target {
    fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.path(name))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn create(
        &self,
        name: &str,
        meta: &BackupObjectMeta,
    ) -> Result<Box<dyn ObjectWriter>, TargetError> {
        let path = self.path(name);
        let options = PutMultipartOptions {
            attributes: write_meta(meta),
            ..Default::default()
        };
        let upload = self
            .handle
            .block_on(self.store.put_multipart_opts(&path, options))
            .map_err(|e| self.failed("starting the upload of", name, e))?;
        Ok(Box::new(MultipartWriter::start(
            self.handle.clone(),
            upload,
            self.location(name),
        )))
    }

    fn open(&self, name: &str) -> Result<OpenedObject, TargetError> {
        let result = self
            .handle
            .block_on(self.store.get_opts(&self.path(name), GetOptions::default()))
            .map_err(|e| self.failed("reading", name, e))?;
        let size = result.meta.size;
        let meta = read_meta(&result.attributes);
        let reader = DownloadReader::start(
            self.handle.clone(),
            result.into_stream(),
            self.location(name),
        );
        Ok(OpenedObject {
            reader: Box::new(reader),
            size,
            meta,
        })
    }

    fn list(&self) -> Result<Vec<ObjectEntry>, TargetError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let objects: Vec<object_store::ObjectMeta> = self
            .handle
            .block_on(self.store.list(prefix.as_ref()).try_collect())
            .map_err(|e| {
                TargetError::Failed(format!(
                    "listing s3://{}/{} failed: {e}",
                    self.bucket, self.prefix
                ))
            })?;
        let mut out: Vec<ObjectEntry> = objects
            .into_iter()
            .filter_map(|o| {
                let full = o.location.as_ref();
                let name = if self.prefix.is_empty() {
                    full
                } else {
                    full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
                };
                (!name.contains('/') && name.ends_with(".evb")).then(|| ObjectEntry {
                    name: name.to_string(),
                    size: o.size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        match self.handle.block_on(self.store.delete(&self.path(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("deleting", name, e)),
        }
    }

    /// Objects cannot be changed in place: the object is copied through with the slot
    /// replaced, by a new multipart upload that replaces it atomically on completion. Linear
    /// in the backup's size (a local file is rewritten in place instead).
    fn write_slot(&self, name: &str, index: usize, slot: &KeySlot) -> Result<(), TargetError> {
        let (offset, bytes) = format::encode_slot_at(index, slot)
            .map_err(|e| TargetError::Failed(format!("{}: {e}", self.location(name))))?;
        let opened = self.open(name)?;
        let meta = opened.meta.ok_or_else(|| {
            TargetError::Failed(format!(
                "{} carries no envault metadata; not rewriting it",
                self.location(name)
            ))
        })?;
        let mut reader = opened.reader;
        let mut writer = self.create(name, &meta)?;
        let copied = (|| -> std::io::Result<()> {
            let mut front = vec![0u8; offset as usize + bytes.len()];
            reader.read_exact(&mut front)?;
            front[offset as usize..].copy_from_slice(&bytes);
            writer.write_all(&front)?;
            std::io::copy(&mut reader, &mut writer)?;
            Ok(())
        })();
        match copied {
            Ok(()) => writer.finish().map(|_| ()),
            Err(e) => {
                writer.abort();
                Err(TargetError::Failed(format!(
                    "rewriting {} failed: {e}",
                    self.location(name)
                )))
            }
        }
    }

    /// Nothing is removed: the bucket may hold other nodes' backups, or this node's from
    /// before its data dir was lost; those are adopted when listed. Interrupted uploads never
    /// became objects (their parts are aborted, or expire by the bucket's lifecycle rule).
    fn clean(&self, _known: &HashSet<String>) -> Result<usize, TargetError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://bucket/a/b/").unwrap(),
            ("bucket".into(), "a/b".into())
        );
        assert_eq!(
            parse_url("s3://bucket").unwrap(),
            ("bucket".into(), String::new())
        );
        for bad in [
            "bucket/x",
            "s3://B/x",
            "s3://ab/x",
            "s3://bucket/../x",
            "s3://bucket/a//b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_round_trip() {
        let meta = BackupObjectMeta {
            backup_id: Uuid::from_u128(1),
            database_id: Uuid::from_u128(2),
            backup_key_id: Uuid::from_u128(3),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(read_meta(&write_meta(&meta)), Some(meta));
        assert_eq!(read_meta(&Attributes::new()), None);
    }

    #[test]
    fn credentials_file_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n[other]\naws_access_key_id=B\n",
        )
        .unwrap();
        let c = file_credentials(&path, "default").unwrap().unwrap();
        assert_eq!(c.access_key_id.as_str(), "A");
        assert_eq!(c.secret_access_key.as_str(), "S");
        assert!(file_credentials(&path, "other").is_err());
        assert!(file_credentials(std::path::Path::new(""), "default")
            .unwrap()
            .is_none());
    }
}
