//! The API's rules enforced by a real kube-apiserver (issue 3, first step): crds/ install and
//! become Established, a minimal PgCluster is accepted with the schema's defaults filled in,
//! and bad specs — OpenAPI rules, CEL rules, and CEL update rules that compare with the old
//! object — are rejected with the messages the offline tests in api_validation.rs expect.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, Config};
use pgha::api::cluster::PgCluster;
use pgha_e2e::ControlPlane;
use serde_json::{Value, json};

async fn client(plane: &ControlPlane) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(plane.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Installs every CRD in crds/ and waits until each is Established.
async fn install_crds(client: &Client) {
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

fn cluster(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "pgha.dev/v1",
        "kind": "PgCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The API server's message for a refused create or replace.
fn refusal(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(object) => panic!("accepted: {:?}", object.data),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message.clone()
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_api_server_enforces_the_schema_and_cel_rules() {
    let plane = ControlPlane::start().unwrap();
    let client = client(&plane).await;
    install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
        )
        .await
        .unwrap();
    let resource = ApiResource::erase::<PgCluster>(&());
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), "t", &resource);
    let pp = PostParams::default();

    // Accepted, with the defaults filled in by the API server.
    let minimal = json!({"storage": {"size": "10Gi"}});
    let created = clusters
        .create(&pp, &cluster("orders", minimal.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plane.log("kube-apiserver")));
    let spec = &created.data["spec"];
    assert_eq!(spec["instances"], 3);
    assert_eq!(spec["postgresVersion"], 15);
    assert_eq!(spec["replication"]["synchronous"]["mode"], "off");
    assert_eq!(spec["bootstrap"]["initdb"]["database"], "app");
    assert_eq!(spec["failover"]["maxLagBytes"], 16777216);

    // Refused on create.
    let storage = minimal["storage"].clone();
    let bad = [
        (json!({"instances": 40}), "less than or equal to 32"),
        (
            json!({"postgresVersion": 12}),
            "greater than or equal to 13",
        ),
        (
            json!({"replication": {"synchronous": {"mode": "sometimes"}}}),
            "Unsupported value: \"sometimes\"",
        ),
        (
            json!({"instances": 3, "replication": {"synchronous": {"mode": "quorum", "number": 3}}}),
            "replication.synchronous.number must be less than instances",
        ),
        (
            json!({"postgresql": {"parameters": {"port": "5433"}}}),
            "parameter port is managed by the operator and cannot be set",
        ),
        (
            json!({"storage": {"size": "512Mi"}}),
            "storage.size must be a quantity of at least 1Gi",
        ),
        (
            json!({"bootstrap": {"initdb": {"owner": "pg_monitor"}}}),
            "bootstrap.initdb.owner must not be postgres, streaming_replica or start with pg_",
        ),
    ];
    for (i, (patch, expected)) in bad.into_iter().enumerate() {
        let mut spec = json!({"storage": storage});
        for (key, value) in patch.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let message = refusal(
            clusters
                .create(&pp, &cluster(&format!("bad{i}"), spec))
                .await,
        );
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }

    // Refused on update: the rules that compare with the old object.
    let updates = [
        (
            json!({"storage": {"size": "5Gi"}}),
            "storage.size may grow but not shrink",
        ),
        (
            json!({"storage": {"size": "10Gi", "storageClassName": "fast"}}),
            "storage.storageClassName is immutable",
        ),
        (
            json!({"postgresVersion": 14}),
            "postgresVersion may not go down",
        ),
        (
            json!({"bootstrap": {"initdb": {"database": "orders", "owner": "app"}}}),
            "bootstrap is immutable",
        ),
    ];
    for (patch, expected) in updates {
        let mut object = clusters.get("orders").await.unwrap();
        for (key, value) in patch.as_object().unwrap() {
            object.data["spec"][key] = value.clone();
        }
        let message = refusal(clusters.replace("orders", &pp, &object).await);
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
    // Growing the volume is allowed.
    let mut object = clusters.get("orders").await.unwrap();
    object.data["spec"]["storage"]["size"] = json!("20Gi");
    clusters.replace("orders", &pp, &object).await.unwrap();
}
