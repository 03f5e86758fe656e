//! Shared by the tests on the local control plane: the CRDs installed.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};

/// Installs every CRD in crds/ and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        names.push(crd.metadata.name.clone().unwrap());
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    assert_eq!(names.len(), 3, "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = crds.get(&name).await.unwrap();
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} not Established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
