//! A pod's volumes as directories: emptyDir under the pod's directory, PVCs at their
//! PersistentVolume's path, and secret / configMap / downwardAPI / projected volumes written
//! as files (projected service-account tokens are requested from the API server for the pod
//! and rewritten before they expire, as the kubelet does).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume, VolumeProjection,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::env;
use crate::process::Mount;

/// A token file and when to renew it.
struct Token {
    file: PathBuf,
    service_account: String,
    audience: Option<String>,
    expiration_seconds: i64,
    mode: u32,
    renew_at: Instant,
}

/// The prepared volumes of one pod.
pub(crate) struct Volumes {
    dirs: HashMap<String, PathBuf>,
    tokens: Vec<Token>,
}

/// Writes a file as its readers expect it: whole or not at all.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = path.with_extension("proclet-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A relative path inside a volume; `..` and absolute paths are refused.
fn inside(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("path {relative:?} must stay inside its volume"));
    }
    Ok(dir.join(rel))
}

/// Keys (all of them, or the listed items) → files.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
) -> Result<(), String> {
    match items {
        None => {
            for (key, value) in data {
                write_file(&inside(dir, key)?, value, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| format!("{what} has no key {}", item.key))?;
                let mode = item.mode.map_or(default_mode, |m| m as u32);
                write_file(&inside(dir, &item.path)?, value, mode)?;
            }
        }
    }
    Ok(())
}

/// Where the keys of a secret or configMap volume come from.
enum Keys<'a> {
    Secret(&'a Api<Secret>),
    ConfigMap(&'a Api<ConfigMap>),
}

async fn key_files(
    from: Keys<'_>,
    name: &str,
    optional: Option<bool>,
    items: Option<&Vec<KeyToPath>>,
    dir: &Path,
    mode: u32,
) -> Result<(), String> {
    let optional = optional.unwrap_or(false);
    let (data, kind) = match from {
        Keys::Secret(api) => (env::secret_data(api, name, optional).await?, "secret"),
        Keys::ConfigMap(api) => {
            let data = env::config_map_data(api, name, optional).await?;
            let bytes = data.map(|d| d.into_iter().map(|(k, v)| (k, v.into_bytes())).collect());
            (bytes, "configmap")
        }
    };
    match data {
        Some(data) => write_keys(dir, &data, items, mode, &format!("{kind} {name}")),
        None => Ok(()),
    }
}

fn downward_files(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<(), String> {
    for item in items {
        let field = item
            .field_ref
            .as_ref()
            .ok_or_else(|| format!("downwardAPI {}: only fieldRef is supported", item.path))?;
        let map = match field.field_path.as_str() {
            "metadata.labels" => Some(&pod.metadata.labels),
            "metadata.annotations" => Some(&pod.metadata.annotations),
            _ => None,
        };
        let text = match map {
            Some(map) => map
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect(),
            None => env::field(pod, field)?,
        };
        let mode = item.mode.map_or(default_mode, |m| m as u32);
        write_file(&inside(dir, &item.path)?, text.as_bytes(), mode)?;
    }
    Ok(())
}

impl Volumes {
    /// Prepares every volume of `pod` under `root`. An error says what the pod waits for
    /// (an unbound claim, a missing Secret) and is retried.
    pub(crate) async fn prepare(client: &Client, pod: &Pod, root: &Path) -> Result<Self, String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut volumes = Self {
            dirs: HashMap::new(),
            tokens: Vec::new(),
        };
        let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
        for volume in spec.volumes.iter().flatten() {
            let dir = match volume_source_dir(client, namespace, pod, volume).await? {
                Some(dir) => dir,
                None => {
                    let dir = root.join(&volume.name);
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    volumes.fill(client, pod, volume, &dir).await?;
                    dir
                }
            };
            volumes.dirs.insert(volume.name.clone(), dir);
        }
        volumes.renew_tokens(client, pod, true).await?;
        Ok(volumes)
    }

    /// Writes the files of secret, configMap, downwardAPI and projected volumes.
    async fn fill(
        &mut self,
        client: &Client,
        pod: &Pod,
        volume: &Volume,
        dir: &Path,
    ) -> Result<(), String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        if let Some(s) = &volume.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let items = s.items.as_ref();
            key_files(Keys::Secret(&secrets), name, s.optional, items, dir, mode).await?;
        } else if let Some(c) = &volume.config_map {
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let (items, from) = (c.items.as_ref(), Keys::ConfigMap(&config_maps));
            key_files(from, &c.name, c.optional, items, dir, mode).await?;
        } else if let Some(d) = &volume.downward_api {
            let mode = d.default_mode.unwrap_or(0o644) as u32;
            downward_files(dir, pod, d.items.as_deref().unwrap_or_default(), mode)?;
        } else if let Some(p) = &volume.projected {
            let mode = p.default_mode.unwrap_or(0o644) as u32;
            for source in p.sources.iter().flatten() {
                self.project(&secrets, &config_maps, pod, source, dir, mode)
                    .await?;
            }
        } else if volume.empty_dir.is_none() {
            return Err(format!(
                "volume {}: proclet supports emptyDir, hostPath, persistentVolumeClaim, \
                 ephemeral, secret, configMap, downwardAPI and projected volumes",
                volume.name
            ));
        }
        Ok(())
    }

    async fn project(
        &mut self,
        secrets: &Api<Secret>,
        config_maps: &Api<ConfigMap>,
        pod: &Pod,
        source: &VolumeProjection,
        dir: &Path,
        mode: u32,
    ) -> Result<(), String> {
        if let Some(t) = &source.service_account_token {
            let service_account = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            self.tokens.push(Token {
                file: inside(dir, &t.path)?,
                service_account,
                audience: t.audience.clone(),
                expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                mode,
                renew_at: Instant::now(),
            });
        }
        if let Some(c) = &source.config_map {
            let (items, from) = (c.items.as_ref(), Keys::ConfigMap(config_maps));
            key_files(from, &c.name, c.optional, items, dir, mode).await?;
        }
        if let Some(s) = &source.secret {
            let items = s.items.as_ref();
            key_files(Keys::Secret(secrets), &s.name, s.optional, items, dir, mode).await?;
        }
        if let Some(d) = &source.downward_api {
            downward_files(dir, pod, d.items.as_deref().unwrap_or_default(), mode)?;
        }
        Ok(())
    }

    /// Requests new tokens for the pod once 80% of their lifetime has passed (or now).
    pub(crate) async fn renew_tokens(
        &mut self,
        client: &Client,
        pod: &Pod,
        now: bool,
    ) -> Result<(), String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        for token in &mut self.tokens {
            if !now && Instant::now() < token.renew_at {
                continue;
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: token.audience.iter().cloned().collect(),
                    expiration_seconds: Some(token.expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..Default::default()
            };
            let issued = accounts
                .create_token_request(&token.service_account, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("token for serviceaccount {}: {e}", token.service_account))?;
            let jwt = issued.status.map(|s| s.token).unwrap_or_default();
            write_file(&token.file, jwt.as_bytes(), token.mode)?;
            let lifetime = token.expiration_seconds.max(60) as u64;
            token.renew_at = Instant::now() + Duration::from_secs(lifetime * 4 / 5);
        }
        Ok(())
    }

    /// The bind mounts of one container.
    pub(crate) fn mounts(&self, container: &Container) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let dir = self
                .dirs
                .get(&m.name)
                .ok_or_else(|| format!("volumeMount {}: no volume of that name", m.name))?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => dir.clone(),
                Some(sub) => {
                    let source = inside(dir, sub)?;
                    if source.is_file() {
                        return Err(format!(
                            "volumeMount {}: subPath {sub} is a file; proclet mounts directories only",
                            m.name
                        ));
                    }
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("{}: {e}", source.display()))?;
                    source
                }
            };
            mounts.push(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }
}

/// The directory of a volume that lives outside the pod (a claim's PersistentVolume, a host
/// path), or None for the kinds the pod owns. A generic ephemeral volume is the claim
/// `<pod>-<volume>` that the controller-manager makes from its template.
async fn volume_source_dir(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
) -> Result<Option<PathBuf>, String> {
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if host.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        return Ok(Some(path));
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let name = match (&volume.persistent_volume_claim, &volume.ephemeral) {
        (Some(claim), _) => claim.claim_name.clone(),
        (None, Some(_)) => format!("{pod_name}-{}", volume.name),
        (None, None) => return Ok(None),
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let name = &name;
    let pvc = claims
        .get_opt(name)
        .await
        .map_err(|e| format!("persistentvolumeclaim {name}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
    // As the kubelet does: an ephemeral volume is only the claim made for this very pod,
    // never one an earlier pod of the same name left behind.
    let ours = pvc
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref());
    if volume.ephemeral.is_some() && !ours {
        return Err(format!(
            "waiting for persistentvolumeclaim {name} of this pod (the one there belongs to \
             another)"
        ));
    }
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    let (true, Some(volume_name)) = (bound, volume_name) else {
        return Err(format!(
            "waiting for persistentvolumeclaim {name} to be bound"
        ));
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .map_err(|e| format!("persistentvolume {volume_name}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .local
        .map(|l| l.path)
        .or_else(|| spec.host_path.map(|h| h.path))
        .ok_or_else(|| format!("persistentvolume {volume_name} is neither local nor hostPath"))?;
    Ok(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_stay_inside_the_volume() {
        let dir = Path::new("/v");
        assert_eq!(inside(dir, "a/b").unwrap(), Path::new("/v/a/b"));
        assert!(inside(dir, "../etc/passwd").is_err());
        assert!(inside(dir, "/etc/passwd").is_err());
    }
}
