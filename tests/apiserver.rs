//! The API's rules enforced by a real kube-apiserver (issue 3, first step): crds/ install and
//! become Established, a minimal PgCluster is accepted with the schema's defaults filled in,
//! and every bad input of tests/common/rejections.rs — OpenAPI rules, CEL rules, and CEL
//! update rules that compare with the old object — is refused with its message.

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Client, Config};
use pgha::api::{PgBackup, PgCluster, PgDatabase, PgInstance};
use pgha_e2e::ControlPlane;
use serde_json::{Value, json};

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
    assert_eq!(names.len(), 4, "{names:?}");
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

async fn client(plane: &ControlPlane) -> Client {
    pgha_e2e::client(&plane.kubeconfig()).await.unwrap()
}

#[path = "common/rejections.rs"]
mod rejections;

#[path = "common/api_requests.rs"]
mod api_requests;

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
    let mut minimal: DynamicObject = serde_json::from_value(rejections::minimal()).unwrap();
    minimal.metadata.namespace = Some("t".into());
    let created = clusters
        .create(&pp, &minimal)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plane.log("kube-apiserver")));
    let spec = &created.data["spec"];
    assert_eq!(spec["instances"], 3);
    assert_eq!(spec["postgresVersion"], 15);
    assert_eq!(spec["replication"]["synchronous"]["mode"], "off");
    assert_eq!(spec["bootstrap"]["initdb"]["database"], "app");
    assert_eq!(spec["failover"]["maxLagBytes"], 16777216);

    // Every case of the shared table, each in a namespace of its own so that names stay
    // as the case has them.
    let cases = rejections::all();
    assert!(cases.len() > 70, "{}", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let namespace = format!("case-{i}");
        namespaces
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();
        let api = |object: &Value| {
            let resource = match object["kind"].as_str() {
                Some("PgCluster") => ApiResource::erase::<PgCluster>(&()),
                Some("PgInstance") => ApiResource::erase::<PgInstance>(&()),
                Some("PgBackup") => ApiResource::erase::<PgBackup>(&()),
                Some("PgDatabase") => ApiResource::erase::<PgDatabase>(&()),
                other => panic!("no resource for {other:?}"),
            };
            Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource)
        };
        let in_namespace = |object: &Value| {
            let mut object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
            object.metadata.namespace = Some(namespace.clone());
            object
        };
        let mut object = in_namespace(&case.object);
        let result = match &case.old {
            None => api(&case.object).create(&pp, &object).await,
            Some(old) => {
                let created = api(old)
                    .create(&pp, &in_namespace(old))
                    .await
                    .unwrap_or_else(|e| panic!("the old object of case {i}: {e}"));
                object.metadata.resource_version = created.metadata.resource_version;
                let name = object.metadata.name.clone().unwrap();
                api(&case.object).replace(&name, &pp, &object).await
            }
        };
        let message = refusal(result);
        assert!(
            message.contains(case.server_message()),
            "case {i}: {:?} not in {message:?}",
            case.server_message()
        );
    }

    // Growing the volume is allowed.
    let mut object = clusters.get("orders").await.unwrap();
    object.data["spec"]["storage"]["size"] = json!("20Gi");
    clusters.replace("orders", &pp, &object).await.unwrap();
}

/// The controller-manager's garbage collector deletes what an owner reference ties to a
/// deleted owner — the mechanism that removes a PgCluster's children.
#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let plane = ControlPlane::start().unwrap();
    let client = client(&plane).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let owner = maps
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let dependent = json!({"metadata": {"name": "dependent", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.unwrap(),
    }]}});
    maps.create(&pp, &serde_json::from_value(dependent).unwrap())
        .await
        .unwrap();
    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while maps.get_opt("dependent").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the dependent outlived its owner:\n{}",
            plane.log("kube-controller-manager")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ServiceAccount's token (what a pod's projected volume holds) is allowed exactly what its
/// Role grants: the signing keys and RBAC the agents will rely on.
#[tokio::test]
async fn a_service_account_gets_what_its_role_grants_and_no_more() {
    let plane = ControlPlane::start().unwrap();
    let admin = client(&plane).await;
    let pp = PostParams::default();
    let objects = [
        (
            ApiResource::erase::<ServiceAccount>(&()),
            json!({"metadata": {"name": "agent"}}),
        ),
        (
            ApiResource::erase::<Role>(&()),
            json!({"metadata": {"name": "read-maps"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        ),
        (
            ApiResource::erase::<RoleBinding>(&()),
            json!({"metadata": {"name": "agent-reads-maps"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-maps"},
                   "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "default"}]}),
        ),
        (
            ApiResource::erase::<ConfigMap>(&()),
            json!({"metadata": {"name": "settings"}}),
        ),
    ];
    for (kind, object) in objects {
        Api::<DynamicObject>::namespaced_with(admin.clone(), "default", &kind)
            .create(&pp, &serde_json::from_value(object).unwrap())
            .await
            .unwrap();
    }

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let token = accounts
        .create_token_request("agent", &pp, &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(plane.kubeconfig()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let agent = Client::try_from(config).unwrap();

    let maps: Api<ConfigMap> = Api::namespaced(agent.clone(), "default");
    maps.get("settings").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(agent, "default");
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing secrets must be forbidden: {other:?}"),
    }
}

/// A Lease's holder renews it with one write each time (no read first), and still loses to
/// any other writer: a renewal over a Lease someone changed reads it again and decides anew.
#[tokio::test]
async fn a_lease_renewal_is_one_write_and_loses_to_any_other_writer() {
    use pgha::k8s::lease::{LeaseApi, Renewal, Takeover};
    let plane = ControlPlane::start().unwrap();
    let client = client(&plane).await;
    let agent = LeaseApi::new(client.clone(), "default", "orders-primary");
    let operator = LeaseApi::new(client.clone(), "default", "orders-primary");
    assert!(
        operator
            .create("orders-1", 3, None, Default::default())
            .await
            .unwrap()
    );
    let renewal = Renewal {
        duration_seconds: 3,
        annotations: Some([("pgha.dev/lsn".to_string(), "0/1".to_string())].into()),
    };
    assert!(
        agent
            .renew("orders-1", &renewal, Takeover::Never)
            .await
            .unwrap()
    );
    let before = api_requests::counts(&client).await;
    for _ in 0..20 {
        assert!(
            agent
                .renew("orders-1", &renewal, Takeover::Never)
                .await
                .unwrap()
        );
    }
    let on_leases = api_requests::between(&before, &api_requests::counts(&client).await);
    let verb = |verb: &str| on_leases.get(&("leases".into(), verb.into())).copied();
    // The API server renews its own identity Lease now and then: one read and write more.
    let (gets, puts) = (verb("GET").unwrap_or(0.0), verb("PUT").unwrap_or(0.0));
    assert!(
        gets <= 1.0 && (20.0..=21.0).contains(&puts),
        "20 renewals took {gets} reads and {puts} writes: {on_leases:?}"
    );

    // The operator hands the Lease to another: the holder's next renewal says it lost it.
    // Handed back, the holder renews again although the Lease changed under it.
    for (to, renews) in [("orders-2", false), ("orders-1", true)] {
        let current = operator.get().await.unwrap().unwrap();
        let handed = operator.hand_over(&current, to, 3, "pgha.dev/agent-run");
        assert!(handed.await.unwrap());
        let renewed = agent.renew("orders-1", &renewal, Takeover::Never);
        assert_eq!(renewed.await.unwrap(), renews, "the Lease handed to {to}");
    }
    let lease = operator.get().await.unwrap().unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("orders-1")
    );
    assert_eq!(
        lease
            .metadata
            .annotations
            .unwrap()
            .get("pgha.dev/lsn")
            .map(String::as_str),
        Some("0/1")
    );
}
