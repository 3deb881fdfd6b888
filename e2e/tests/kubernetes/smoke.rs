//! The cluster itself: `up` twice changes nothing, a replica pod from Thicket's own image
//! answers `/healthz` through a Service from the host and, by DNS name, from another pod,
//! and a volume claim of the default StorageClass binds.

use thicket_e2e::{apply, cluster, kubectl};

const NS: &str = "thicket-smoke";

fn manifest(replica_image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: replica
  namespace: {NS}
  labels: {{app: thicket-smoke}}
spec:
  hostname: replica-0
  subdomain: replicas
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}}
  containers:
  - name: replica
    image: {replica_image}
    imagePullPolicy: Never
    args: [up, --replicas, "1", --data-dir, /data/subnet, --http-host, 0.0.0.0, --base-port, "7100"]
    ports: [{{name: http, containerPort: 7101}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
    securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {NS}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: replica, namespace: {NS}}}
spec:
  selector: {{app: thicket-smoke}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: replicas, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: thicket-smoke}}
  ports: [{{name: http, port: 7101, targetPort: http}}]
"#
    )
}

/// A pod that checks, from inside the cluster, that both names resolve and answer.
fn probe_pod(toolbox_image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: probe, namespace: {NS}}}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: {toolbox_image}
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      set -e
      nslookup replica.{NS}.svc.cluster.local
      nslookup replica-0.replicas.{NS}.svc.cluster.local
      echo "service: $(wget -qO- http://replica/healthz)"
      echo "headless: $(wget -qO- http://replica-0.replicas:7101/healthz)"
"#
    )
}

/// curl from the host, failing on HTTP errors, each attempt limited to 10 s.
fn curl(args: &[&str]) -> String {
    thicket_e2e::run(
        std::process::Command::new("curl")
            .args(["-sSf", "--max-time", "10"])
            .args(args),
        None,
    )
}

pub fn a_replica_pod_answers_through_a_service_and_cluster_dns() {
    // `up` again on a running cluster changes nothing: the same processes run.
    let before = cluster(&["status"]);
    let again = cluster(&["up"]);
    assert!(
        again.contains("export KUBECONFIG="),
        "a second `e2e/cluster up` printed {again}"
    );
    assert_eq!(
        cluster(&["status"]).lines().take(8).collect::<Vec<_>>(),
        before.lines().take(8).collect::<Vec<_>>(),
        "a second `up` restarted components"
    );
    let nodes = kubectl(&["get", "nodes", "--no-headers"]);
    assert!(
        nodes.lines().count() == 1 && nodes.contains(" Ready "),
        "expected one Ready node: {nodes}"
    );

    // Thicket's replica image, built from the release binary and tagged with the revision.
    let replica_image = cluster(&["image", "replica"]).trim().to_string();
    assert!(
        replica_image.starts_with("localhost/thicket/replica:"),
        "unexpected image reference {replica_image}"
    );
    let toolbox_image = cluster(&["image", "toolbox"]).trim().to_string();

    kubectl(&["delete", "namespace", NS, "--ignore-not-found", "--wait"]);
    apply(&manifest(&replica_image));
    kubectl(&[
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "pod/replica",
        "--timeout=180s",
    ]);
    let pod_ip = kubectl(&[
        "-n",
        NS,
        "get",
        "pod/replica",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert!(pod_ip.starts_with("10.244."), "pod IP {pod_ip:?}");
    // Its volume came from the default StorageClass, writable by the pod's non-root user.
    let pvc = kubectl(&[
        "-n",
        NS,
        "get",
        "pvc/data",
        "-o",
        "jsonpath={.status.phase} {.spec.storageClassName}",
    ]);
    assert_eq!(
        pvc, "Bound standard",
        "the claim binds through the default class"
    );
    let image = kubectl(&[
        "-n",
        NS,
        "get",
        "pod/replica",
        "-o",
        "jsonpath={.status.containerStatuses[0].image}",
    ]);
    assert_eq!(image, replica_image, "the pod runs the image just built");

    // From the host, through the Service's ClusterIP (kube-proxy's rules, which follow the
    // pod's readiness within a second or two).
    let cluster_ip = kubectl(&[
        "-n",
        NS,
        "get",
        "service/replica",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(cluster_ip.starts_with("10.96."), "ClusterIP {cluster_ip}");
    let health = curl(&[
        "--retry",
        "30",
        "--retry-delay",
        "1",
        "--retry-connrefused",
        &format!("http://{cluster_ip}/healthz"),
    ]);
    assert_eq!(health.trim(), "ok");
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{content_type}",
        &format!("http://{cluster_ip}/api/v2/status"),
    ]);
    assert_eq!(
        status, "200 application/cbor",
        "the IC HTTP interface answers"
    );

    // From inside the cluster, by name: the Service, and the pod's headless-Service name.
    apply(&probe_pod(&toolbox_image));
    let mut phase = String::new();
    for _ in 0..120 {
        phase = kubectl(&[
            "-n",
            NS,
            "get",
            "pod/probe",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let probe = kubectl(&["-n", NS, "logs", "pod/probe"]);
    assert_eq!(phase, "Succeeded", "the probe pod ended {phase}: {probe}");
    assert!(probe.contains("service: ok"), "probe: {probe}");
    assert!(probe.contains("headless: ok"), "probe: {probe}");
    assert!(
        probe.contains(&pod_ip),
        "the headless name resolves to the pod ({pod_ip}): {probe}"
    );

    kubectl(&["delete", "namespace", NS, "--wait"]);
}
