//! The local cluster of e2e/ at work (issue 3): pods run as processes on proclet nodes, with
//! init containers, PVC data that outlives the pod, readiness probes, restarts, graceful
//! deletion, projected ServiceAccount tokens, Service proxies that follow their endpoints, and
//! node loss.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use pgha_e2e::{Cluster, ClusterOptions, Fault, PodRef};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each test has a cluster of its own, on its own loopback block (0 is `make cluster-up`'s),
/// and works in one namespace of it.
async fn cluster(index: u8, namespace_name: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(ClusterOptions {
        index,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = cluster.client();
    namespace(&client, namespace_name).await;
    (cluster, client)
}

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_saphyr::from_str(text).unwrap()
}

async fn create<K>(client: &Client, namespace: &str, object: K) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap()
}

/// A namespace whose `default` ServiceAccount exists (pods are refused before it does).
async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &yaml(&format!("metadata: {{name: {name}}}")),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    wait(
        Duration::from_secs(30),
        "the default ServiceAccount",
        || async { accounts.get_opt("default").await.ok().flatten().is_some() },
    )
    .await;
}

async fn wait<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pod(client: &Client, namespace: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(client: &Client, namespace: &str, name: &str, ready: bool) -> Pod {
    let what = format!("pod {namespace}/{name} ready={ready}");
    wait(Duration::from_secs(40), &what, || async {
        pod(client, namespace, name)
            .await
            .is_some_and(|p| is_ready(&p) == ready)
    })
    .await;
    pod(client, namespace, name).await.unwrap()
}

/// One HTTP/1.0 GET; the body, or None when the connection fails or closes empty.
async fn get(address: std::net::SocketAddr) -> Option<String> {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        Some(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// A python HTTP server on the pod's own address that answers with the pod's name, notes its
/// boots and a SIGTERM in /data, and is Ready through an httpGet probe.
fn web_pod(name: &str, claim: Option<&str>) -> Pod {
    let volume = claim
        .map(|c| format!("volumes: [{{name: data, persistentVolumeClaim: {{claimName: {c}}}}}]"))
        .unwrap_or_else(|| "volumes: [{name: data, emptyDir: {}}]".into());
    yaml(&format!(
        r#"
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: init
    image: busybox:1.36
    command: [sh, -c, 'echo "boot of $(POD_NAME)" >> /data/boots']
    env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: web
    image: python:3.11
    command: [python3, -c]
    args:
    - |
      import http.server, os, signal, sys
      def bye(*_):
          open("/data/sigterm", "w").write("SIGTERM to " + os.environ["POD_NAME"])
          sys.exit(0)
      signal.signal(signal.SIGTERM, bye)
      class Name(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              self.send_response(200)
              self.end_headers()
              self.wfile.write(os.environ["POD_NAME"].encode())
      http.server.HTTPServer((os.environ["POD_IP"], 8080), Name).serve_forever()
    env:
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2}}
    volumeMounts: [{{name: data, mountPath: /data}}]
  {volume}
"#
    ))
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .restart_count
}

#[tokio::test]
async fn pods_run_as_processes_with_volumes_probes_restarts_and_graceful_deletion() {
    let (cluster, client) = cluster(1, "apps").await;
    let claim: PersistentVolumeClaim = yaml(
        "metadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}",
    );
    create(&client, "apps", claim).await;
    create(&client, "apps", web_pod("web", Some("data"))).await;
    let web = wait_ready(&client, "apps", "web", true).await;

    // Its own address on its node's block, serving there.
    let status = web.status.clone().unwrap();
    let ip = status.pod_ip.unwrap();
    let node = web.spec.as_ref().unwrap().node_name.clone().unwrap();
    let number: u8 = node.strip_prefix("node-").unwrap().parse().unwrap();
    assert!(
        ip.starts_with(&format!("127.{}.", 16 + number)),
        "{ip} on {node}"
    );
    let address = format!("{ip}:8080").parse().unwrap();
    assert_eq!(get(address).await.as_deref(), Some("web"));

    // The claim got a volume on that node, where the init container wrote.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "apps");
    let volume_name = claims
        .get("data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .unwrap();
    let dir = std::path::PathBuf::from(volume.spec.unwrap().local.unwrap().path);
    assert!(
        dir.starts_with(cluster.state_dir().join("nodes").join(&node)),
        "{dir:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("boots")).unwrap(),
        "boot of web\n"
    );

    // Frozen, the probe fails and the pod is unready; thawed, it is ready again.
    let web_ref: PodRef = "apps/web".parse().unwrap();
    assert_eq!(
        cluster.fault(&web_ref, Some("web"), Fault::Freeze).unwrap(),
        1
    );
    wait_ready(&client, "apps", "web", false).await;
    cluster.fault(&web_ref, None, Fault::Thaw).unwrap();
    wait_ready(&client, "apps", "web", true).await;

    // Killed, it is restarted in place: one restart, exit 137 remembered, ready again.
    cluster.fault(&web_ref, Some("web"), Fault::Kill).unwrap();
    wait(Duration::from_secs(30), "restart after SIGKILL", || async {
        pod(&client, "apps", "web")
            .await
            .is_some_and(|p| restarts(&p) == 1 && is_ready(&p))
    })
    .await;
    let web = pod(&client, "apps", "web").await.unwrap();
    let statuses = web.status.unwrap().container_statuses.unwrap();
    let last = statuses[0].last_state.clone().unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.signal), (137, Some(9)));
    assert!(
        cluster
            .logs(&web_ref, "web")
            .contains("\"GET / HTTP/1.1\" 200")
    );

    // Graceful deletion: SIGTERM reaches the process, the pod goes once it has exited.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait(Duration::from_secs(20), "pod gone", || async {
        pod(&client, "apps", "web").await.is_none()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.join("sigterm")).unwrap(),
        "SIGTERM to web"
    );
    assert_eq!(get(address).await, None, "the server still answers");

    // Re-created on the same claim: same volume, same node, the data is still there.
    create(&client, "apps", web_pod("web", Some("data"))).await;
    let again = wait_ready(&client, "apps", "web", true).await;
    assert_eq!(again.spec.unwrap().node_name.unwrap(), node);
    assert_eq!(
        claims
            .get("data")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_name
            .unwrap(),
        volume_name
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("boots")).unwrap(),
        "boot of web\nboot of web\n"
    );

    // Deleted with grace period 0: gone from the API and its processes killed at once.
    cluster.delete_now(&web_ref).await.unwrap();
    wait(Duration::from_secs(5), "server killed", || async {
        get(address).await.is_none()
    })
    .await;

    // An image that is not in the table fails like a pull.
    let bad: Pod =
        yaml("metadata: {name: bad}\nspec: {containers: [{name: c, image: 'nginx:1.27'}]}");
    create(&client, "apps", bad).await;
    wait(Duration::from_secs(20), "ErrImagePull", || async {
        let Some(p) = pod(&client, "apps", "bad").await else {
            return false;
        };
        let waiting = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting);
        waiting.is_some_and(|w| {
            w.reason.as_deref() == Some("ErrImagePull")
                && w.message
                    .unwrap_or_default()
                    .contains("\"nginx:1.27\" is not in proclet's image table")
        })
    })
    .await;
}

#[tokio::test]
async fn in_pod_processes_use_their_service_account_and_rbac_applies() {
    let (cluster, client) = cluster(2, "rbac").await;
    create(
        &client,
        "rbac",
        yaml::<ServiceAccount>("metadata: {name: reader}"),
    )
    .await;
    let role: Role = yaml(
        "metadata: {name: read-config}\nrules: [{apiGroups: [''], resources: [configmaps], verbs: [get]}]",
    );
    create(&client, "rbac", role).await;
    let binding: RoleBinding = yaml(
        "metadata: {name: reader}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-config}\n\
         subjects: [{kind: ServiceAccount, name: reader, namespace: rbac}]",
    );
    create(&client, "rbac", binding).await;
    // What any in-cluster client does: the kubernetes Service from the env, the token and CA
    // from the projected volume.
    let probe: Pod = yaml(
        r#"
metadata: {name: caller}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
  - name: caller
    image: python
    command: [python3, -c]
    args:
    - |
      import os, ssl, urllib.request, urllib.error
      sa = "/var/run/secrets/kubernetes.io/serviceaccount"
      token = open(sa + "/token").read()
      namespace = open(sa + "/namespace").read()
      context = ssl.create_default_context(cafile=sa + "/ca.crt")
      base = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
      for path in ["/api/v1/namespaces/%s/configmaps/kube-root-ca.crt" % namespace,
                   "/api/v1/namespaces/%s/secrets" % namespace]:
          request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
          try:
              code = urllib.request.urlopen(request, context=context).status
          except urllib.error.HTTPError as e:
              code = e.code
          print(path, code, flush=True)
"#,
    );
    create(&client, "rbac", probe).await;
    wait(Duration::from_secs(30), "caller Succeeded", || async {
        pod(&client, "rbac", "caller")
            .await
            .and_then(|p| p.status?.phase)
            .is_some_and(|phase| phase == "Succeeded")
    })
    .await;
    let log = cluster.logs(&"rbac/caller".parse().unwrap(), "caller");
    assert!(log.contains("/configmaps/kube-root-ca.crt 200"), "{log}");
    assert!(log.contains("/namespaces/rbac/secrets 403"), "{log}");
}

#[tokio::test]
async fn services_follow_ready_endpoints_and_a_lost_node_goes_not_ready() {
    let (cluster, client) = cluster(3, "svc").await;
    let service: Service = yaml(
        "metadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}",
    );
    create(&client, "svc", service).await;
    create(&client, "svc", web_pod("a", None)).await;
    wait_ready(&client, "svc", "a", true).await;
    let address = cluster
        .service_address("svc", "web", Some("http"))
        .await
        .unwrap();
    assert!(
        address.ip().to_string().starts_with("127.243."),
        "{address}"
    );
    wait(Duration::from_secs(10), "the Service reaches a", || async {
        get(address).await.as_deref() == Some("a")
    })
    .await;

    // The endpoint goes; a new pod with the same labels takes over behind the same address.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "svc");
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    create(&client, "svc", web_pod("b", None)).await;
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.last() != Some(&Some("b".to_string())) {
        assert!(
            Instant::now() < deadline,
            "the Service never reached b: {answers:?}"
        );
        answers.push(get(address).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = pod(&client, "svc", "b").await.unwrap();
    assert!(
        !answers
            .iter()
            .skip_while(|a| a.as_deref() == Some("a"))
            .any(|a| a.as_deref() == Some("a")),
        "a answered again after the switch: {answers:?}"
    );

    // b's node agent stops: the node goes NotReady, b is marked unready, the Service has no
    // endpoint; the agent comes back and so does b.
    let node = b.spec.unwrap().node_name.unwrap();
    cluster.set_node_running(&node, false).unwrap();
    let started = Instant::now();
    cluster
        .wait_node_ready(&node, false, Duration::from_secs(30))
        .await
        .unwrap();
    let not_ready_after = started.elapsed();
    wait_ready(&client, "svc", "b", false).await;
    wait(Duration::from_secs(10), "no endpoint", || async {
        get(address).await.is_none()
    })
    .await;
    cluster.set_node_running(&node, true).unwrap();
    cluster
        .wait_node_ready(&node, true, Duration::from_secs(30))
        .await
        .unwrap();
    wait_ready(&client, "svc", "b", true).await;
    wait(Duration::from_secs(10), "b back", || async {
        get(address).await.as_deref() == Some("b")
    })
    .await;
    println!("node NotReady {not_ready_after:?} after its agent stopped");
}

/// A [`web_pod`] with a second container that, every 0.3 s, tries the web server of pod
/// `peer` (its address read from `<shared>/<peer>`) and the API server through the
/// `kubernetes` Service, one new connection each, and logs `peer=ok|fail api=ok|fail`.
fn polling_pod(name: &str, peer: &str, shared: &std::path::Path) -> Pod {
    let mut pod = web_pod(name, None);
    let spec = pod.spec.as_mut().unwrap();
    spec.containers.push(yaml(&format!(
        r#"
name: poll
image: python
command: [python3, -c]
args:
- |
  import os, ssl, time, urllib.error, urllib.request
  sa = "/var/run/secrets/kubernetes.io/serviceaccount"
  context = ssl.create_default_context(cafile=sa + "/ca.crt")
  api = "https://%s:%s/version" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
  def reached(url, **options):
      try:
          urllib.request.urlopen(url, timeout=1, **options).read()
      except urllib.error.HTTPError:
          pass
      except OSError:
          return "fail"
      return "ok"
  print("start", flush=True)
  while True:
      try:
          peer = open("/shared/{peer}").read().strip()
      except OSError:
          time.sleep(0.2)
          continue
      print("peer=%s api=%s" % (reached("http://%s:8080/" % peer), reached(api, context=context)), flush=True)
      time.sleep(0.3)
volumeMounts: [{{name: shared, mountPath: /shared, readOnly: true}}]
"#
    )));
    spec.volumes.get_or_insert_default().push(yaml(&format!(
        "{{name: shared, hostPath: {{path: '{}'}}}}",
        shared.display()
    )));
    pod
}

/// The poll lines a pod's log got after its first `skip` bytes.
fn polls(cluster: &Cluster, pod: &PodRef, skip: usize) -> Vec<String> {
    let log = cluster.logs(pod, "poll");
    log.get(skip..)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `line` is among the poll lines after `skip`, then checks that every later
/// line is `line` too (or a restart's `start`); returns the log's length.
async fn polls_settle(cluster: &Cluster, pod: &PodRef, skip: usize, line: &str) -> usize {
    let what = format!("{}/{} polls {line:?}", pod.namespace, pod.name);
    wait(Duration::from_secs(20), &what, || async {
        polls(cluster, pod, skip)
            .iter()
            .filter(|l| *l == line)
            .count()
            >= 3
    })
    .await;
    let lines = polls(cluster, pod, skip);
    let settled: Vec<&String> = lines.iter().skip_while(|l| *l != line).collect();
    assert!(
        settled.iter().all(|l| *l == line || *l == "start"),
        "{what}, then not: {lines:?}"
    );
    cluster.logs(pod, "poll").len()
}

/// The rules of cluster block 7 in the filter table.
fn partition_rules() -> Vec<String> {
    let listing = std::process::Command::new("iptables")
        .arg("-S")
        .output()
        .unwrap();
    String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("pgha-e2e:7:"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_partitioned_pod_reaches_nothing_and_nothing_reaches_it_until_healed() {
    let (cluster, client) = cluster(7, "part").await;
    let shared = cluster.state_dir().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    for (name, peer) in [("a", "b"), ("b", "a")] {
        create(&client, "part", polling_pod(name, peer, &shared)).await;
    }
    let mut addresses = Vec::new();
    for name in ["a", "b"] {
        let pod = wait_ready(&client, "part", name, true).await;
        let ip = pod.status.unwrap().pod_ip.unwrap();
        std::fs::write(shared.join(name), &ip).unwrap();
        addresses.push(format!("{ip}:8080").parse().unwrap());
    }
    let (a, b): (PodRef, PodRef) = ("part/a".parse().unwrap(), "part/b".parse().unwrap());
    let (a_at, b_at) = (addresses[0], addresses[1]);
    let all_ok = "peer=ok api=ok";
    let mut a_seen = polls_settle(&cluster, &a, 0, all_ok).await;
    let mut b_seen = polls_settle(&cluster, &b, 0, all_ok).await;

    // Partitioned (twice: the same four rules), a reaches neither b nor the API server; b and
    // the node agent's probe no longer reach a; b still reaches the API server.
    cluster.partition(&a).unwrap();
    cluster.partition(&a).unwrap();
    assert_eq!(partition_rules().len(), 4, "{:?}", partition_rules());
    a_seen = polls_settle(&cluster, &a, a_seen, "peer=fail api=fail").await;
    b_seen = polls_settle(&cluster, &b, b_seen, "peer=fail api=ok").await;
    assert_eq!(get(a_at).await, None, "a answers from its partition");
    assert_eq!(get(b_at).await.as_deref(), Some("b"));
    wait_ready(&client, "part", "a", false).await;

    // A container restarted inside the partition is just as cut off.
    cluster.fault(&a, Some("poll"), Fault::Kill).unwrap();
    wait(Duration::from_secs(20), "poll restarted", || async {
        polls(&cluster, &a, a_seen).iter().any(|l| l == "start")
    })
    .await;
    a_seen = polls_settle(&cluster, &a, a_seen, "peer=fail api=fail").await;

    // Healed, everything flows again, and no rule is left.
    cluster.heal(&a).unwrap();
    assert_eq!(partition_rules(), Vec::<String>::new());
    polls_settle(&cluster, &a, a_seen, all_ok).await;
    polls_settle(&cluster, &b, b_seen, all_ok).await;
    wait_ready(&client, "part", "a", true).await;
    assert_eq!(get(a_at).await.as_deref(), Some("a"));

    // A partition the test leaves in place goes with the cluster.
    cluster.partition(&b).unwrap();
    assert_eq!(partition_rules().len(), 4);
    drop(cluster);
    assert_eq!(partition_rules(), Vec::<String>::new());
}
