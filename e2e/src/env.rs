//! A container's environment, by Kubernetes' rules: the node's variables first, then
//! `envFrom`, then `env` in order, with `$(NAME)` references to variables defined before
//! (`$$(` writes a literal `$(`), and `valueFrom` read from the pod, Secrets and ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret};
use kube::{Api, Client};

/// Variables in definition order; a later definition replaces an earlier one.
#[derive(Default)]
pub(crate) struct Env(Vec<(String, String)>);

impl Env {
    pub(crate) fn set(&mut self, name: &str, value: String) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_string(), value));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn vars(&self) -> &[(String, String)] {
        &self.0
    }

    /// `$(NAME)` → its value when defined, left as written when not; `$$(` → `$(`.
    pub(crate) fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(escaped) = after.strip_prefix("$(") {
                out.push_str("$(");
                rest = escaped;
            } else if let Some(reference) = after.strip_prefix('(')
                && let Some(end) = reference.find(')')
                && let Some(value) = self.get(&reference[..end])
            {
                out.push_str(value);
                rest = &reference[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

/// `metadata.name`, `status.podIP`, `metadata.labels['app']`, … of a pod.
pub(crate) fn field(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, String> {
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status.and_then(|s| s.pod_ip.clone()),
        _ => keyed("metadata.labels", &meta.labels)
            .or_else(|| keyed("metadata.annotations", &meta.annotations)),
    };
    value.ok_or_else(|| format!("fieldRef {path} is not supported or not set"))
}

/// The environment of `container` on top of `base` (the node's variables).
pub(crate) async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    base: Env,
) -> Result<Env, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut env = base;
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(data) = config_map_data(&config_maps, &r.name, optional).await? {
                for (k, v) in data {
                    env.set(&format!("{prefix}{k}"), v);
                }
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(data) = secret_data(&secrets, &r.name, optional).await? {
                for (k, v) in data {
                    env.set(&format!("{prefix}{k}"), String::from_utf8_lossy(&v).into());
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(env.expand(var.value.as_deref().unwrap_or(""))),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field(pod, f)?)
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let data = secret_data(&secrets, &r.name, optional).await?;
                    match data.and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => Some(String::from_utf8_lossy(&v).into()),
                        None if optional => None,
                        None => return Err(format!("secret {} has no key {}", r.name, r.key)),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let data = config_map_data(&config_maps, &r.name, optional).await?;
                    match data.and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => Some(v),
                        None if optional => None,
                        None => return Err(format!("configmap {} has no key {}", r.name, r.key)),
                    }
                } else {
                    return Err(format!(
                        "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported",
                        var.name
                    ));
                }
            }
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

pub(crate) async fn secret_data(
    api: &Api<Secret>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match api.get_opt(name).await {
        Ok(Some(secret)) => {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            Ok(Some(data))
        }
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("secret \"{name}\" not found")),
        Err(e) => Err(format!("secret \"{name}\": {e}")),
    }
}

pub(crate) async fn config_map_data(
    api: &Api<ConfigMap>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match api.get_opt(name).await {
        Ok(Some(cm)) => Ok(Some(cm.data.unwrap_or_default())),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("configmap \"{name}\" not found")),
        Err(e) => Err(format!("configmap \"{name}\": {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_in_order_and_escape() {
        let mut env = Env::default();
        env.set("A", "one".into());
        env.set("B", env.expand("$(A)-two"));
        assert_eq!(
            env.expand("$(B) $(C) $$(A) $ ($(A)"),
            "one-two $(C) $(A) $ (one"
        );
        env.set("A", "three".into());
        assert_eq!(env.vars().len(), 2);
        assert_eq!(env.get("A"), Some("three"));
    }

    #[test]
    fn fields_of_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"}},
            "spec": {"containers": [], "nodeName": "node-1"},
            "status": {"podIP": "127.1.0.2"}
        }))
        .unwrap();
        let get = |path: &str| {
            field(
                &pod,
                &ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                },
            )
        };
        assert_eq!(get("metadata.name").unwrap(), "p");
        assert_eq!(get("metadata.namespace").unwrap(), "n");
        assert_eq!(get("status.podIP").unwrap(), "127.1.0.2");
        assert_eq!(get("spec.nodeName").unwrap(), "node-1");
        assert_eq!(get("metadata.labels['app']").unwrap(), "web");
        assert_eq!(get("metadata.labels['none']").unwrap(), "");
        assert!(get("spec.nope").is_err());
    }
}
