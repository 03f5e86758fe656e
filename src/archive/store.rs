//! The object store: one bucket and a key prefix, reached with aws-sdk-s3.
//!
//! Keys under the prefix:
//! - `wal/<file name>.zst` — archived WAL, with its SHA-256 in the object's metadata;
//! - `base/<backup id>/data/<path>.zst` — the files of a base backup;
//! - `base/<backup id>/backup.json` — its manifest, written last: a backup without one is
//!   incomplete and never restored from.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::codec::{self, Sealed};
use super::error::{ArchiveError, Result};
use crate::api::common::ClusterIdentity;

/// Where the archive lives, as the agent and the CLI read it from a YAML or JSON file
/// (`--store`). It mirrors a PgCluster's `spec.backup.s3`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    pub bucket: String,
    /// Key prefix of this cluster's archive.
    #[serde(default)]
    pub path: String,
    /// Endpoint of an S3-compatible service; unset means AWS S3 in `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Folder with the files `ACCESS_KEY_ID` and `SECRET_ACCESS_KEY` (a mounted Secret).
    /// Unset reads `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the environment.
    #[serde(default)]
    pub credentials_dir: Option<PathBuf>,
    /// PEM bundle of the CAs that sign a private endpoint's certificate (added to the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `bucket` in the path rather than the host name; defaults to true with `endpoint`.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The PgCluster whose archive this is, recorded in the archive's owner record.
    #[serde(default)]
    pub cluster: Option<ClusterIdentity>,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl StoreConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(ArchiveError::io("reading", path))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| ArchiveError::Config(format!("{}: {e}", path.display())))
    }
}

/// Metadata key holding the SHA-256 of an object's uncompressed content.
pub const SHA256: &str = "pgha-sha256";

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    bucket: String,
    prefix: String,
}

/// An object under the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key without the prefix.
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

impl Store {
    pub fn new(config: &StoreConfig) -> Result<Self> {
        let (access_key, secret_key) = credentials(config)?;
        let mut trust = TrustStore::default();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(ArchiveError::io("reading the CA bundle", ca))?;
            trust = trust.with_pem_certificate(pem);
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| ArchiveError::Config(format!("TLS: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context)
            .build_https();
        let mut s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                std::env::var("AWS_SESSION_TOKEN").ok(),
                None,
                "pgha",
            ))
            .http_client(http)
            .force_path_style(config.path_style.unwrap_or(config.endpoint.is_some()))
            // Our own SHA-256 covers the content; the SDK's extra CRC trailers are not
            // understood by every S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket.clone(),
            prefix: config.path.trim_matches('/').to_string(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://<bucket>/<prefix>`, the archive as people name it.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    /// The full key of `key` under the prefix.
    pub fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn error<E>(&self, operation: &'static str, key: &str, err: SdkError<E>) -> ArchiveError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        ArchiveError::Store {
            operation,
            bucket: self.bucket.clone(),
            key: self.full_key(key),
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    /// The SHA-256 recorded on `key`, `Some(None)` when it has none, `None` when `key` does
    /// not exist.
    pub async fn head_sha256(&self, key: &str) -> Result<Option<Option<String>>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.metadata().and_then(|m| m.get(SHA256)).cloned())),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(self.error("HeadObject", key, err)),
        }
    }

    /// Stores `body` at `key`. With `create_only` the write is conditional (`If-None-Match`),
    /// and `Ok(false)` says another writer got there first.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: Option<&str>,
        create_only: bool,
    ) -> Result<bool> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(body));
        if let Some(sum) = sha256 {
            request = request.metadata(SHA256, sum);
        }
        if create_only {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if create_only && status(&err) == Some(412) => Ok(false),
            Err(err) => Err(self.error("PutObject", key, err)),
        }
    }

    /// The object at `key` as a stream with its recorded SHA-256, or `None` if it does not
    /// exist.
    pub async fn get(&self, key: &str) -> Result<Option<(ByteStream, Option<String>)>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => {
                let sum = out.metadata().and_then(|m| m.get(SHA256)).cloned();
                Ok(Some((out.body, sum)))
            }
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(self.error("GetObject", key, err)),
        }
    }

    /// The whole object at `key`, or `None`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>> {
        let Some((body, sum)) = self.get(key).await? else {
            return Ok(None);
        };
        let bytes = body.collect().await.map_err(|e| self.read_error(key, e))?;
        Ok(Some((bytes.into_bytes(), sum)))
    }

    /// Streams the zstd object at `key` into the writer `open` makes once the object is found,
    /// decoding on a blocking thread. `None` if it does not exist; else the SHA-256 the archive
    /// recorded and the decoded size and SHA-256, or why it did not decode.
    pub async fn get_decoded<W: Write + Send + 'static>(
        &self,
        key: &str,
        open: impl FnOnce() -> Result<W>,
    ) -> Result<Option<(Option<String>, std::io::Result<Sealed>)>> {
        let Some((mut body, recorded)) = self.get(key).await? else {
            return Ok(None);
        };
        let out = open()?;
        let (tx, rx) = mpsc::channel(8);
        let decoder = tokio::task::spawn_blocking(move || codec::decompress_stream(rx, out));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.read_error(key, e))?;
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(tx);
        let decoded = decoder.await.expect("decoding does not panic");
        Ok(Some((recorded, decoded)))
    }

    /// A failure while reading an object's body.
    fn read_error(&self, key: &str, e: impl std::fmt::Display) -> ArchiveError {
        ArchiveError::Store {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: self.full_key(key),
            message: e.to_string(),
        }
    }

    /// The error for a damaged or missing object at `key`, given why.
    pub fn corrupt(&self, key: &str) -> impl Fn(String) -> ArchiveError + Send + 'static {
        let (bucket, key) = (self.bucket.clone(), self.full_key(key));
        move |why| ArchiveError::Corrupt {
            bucket: bucket.clone(),
            key: key.clone(),
            why,
        }
    }

    /// Every object whose key (under the prefix) starts with `start`.
    pub async fn list(&self, start: &str) -> Result<Vec<Listed>> {
        let strip = self.full_key("").len();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(start))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", start, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let modified = object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                out.push(Listed {
                    key: key[strip..].to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified,
                });
            }
        }
        Ok(out)
    }

    /// Deletes `keys`, up to 1000 per request.
    pub async fn delete(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| ArchiveError::Config(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| ArchiveError::Config(e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("DeleteObjects", &batch[0], e))?;
            if let Some(failed) = out.errors().first() {
                return Err(ArchiveError::Store {
                    operation: "DeleteObjects",
                    bucket: self.bucket.clone(),
                    key: failed.key().unwrap_or_default().to_string(),
                    message: failed.message().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }

    pub async fn start_multipart(&self, key: &str) -> Result<Multipart> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        Ok(Multipart {
            store: self.clone(),
            key: key.to_string(),
            upload_id: out.upload_id().unwrap_or_default().to_string(),
        })
    }
}

/// An open multipart upload. Parts may be sent concurrently; every part but the last must be
/// at least 5 MiB.
#[derive(Clone, Debug)]
pub struct Multipart {
    store: Store,
    key: String,
    upload_id: String,
}

impl Multipart {
    pub async fn part(&self, number: i32, body: Bytes) -> Result<CompletedPart> {
        let out = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.store.error("UploadPart", &self.key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    pub async fn complete(self, mut parts: Vec<CompletedPart>) -> Result<()> {
        parts.sort_by_key(|p| p.part_number());
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.store.error("CompleteMultipartUpload", &self.key, e))?;
        Ok(())
    }

    /// Best effort: a failed upload's parts would otherwise be billed until a lifecycle rule
    /// removes them.
    pub async fn abort(self) {
        let _ = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn credentials(config: &StoreConfig) -> Result<(String, String)> {
    match &config.credentials_dir {
        Some(dir) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path)
                    .map(|v| v.trim().to_string())
                    .map_err(ArchiveError::io("reading credentials", path))
            };
            Ok((read("ACCESS_KEY_ID")?, read("SECRET_ACCESS_KEY")?))
        }
        None => match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) => Ok((id, secret)),
            _ => Err(ArchiveError::Config(
                "no credentials: set credentialsDir to a folder with ACCESS_KEY_ID and \
                 SECRET_ACCESS_KEY, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            )),
        },
    }
}
