//! Golden tests: each builder's output for a few subnets, against YAML in `testdata/`.
//! `UPDATE_GOLDEN=1 cargo test -p thicket-operator` rewrites them; review the diff.

use std::path::PathBuf;

use serde::Serialize;

use super::*;
use crate::subnet::testing::subnet;
use crate::subnet::validate::validate;

fn golden(name: &str, docs: &[serde_yaml::Value]) {
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(d).expect("yaml"));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/subnet/build/testdata")
        .join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &text).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == text,
        "{} differs from what the builders make now:\n{text}",
        path.display()
    );
}

fn yaml<T: Serialize>(v: &T) -> serde_yaml::Value {
    serde_yaml::to_value(v).expect("yaml value")
}

fn all(c: &Children) -> Vec<serde_yaml::Value> {
    vec![
        yaml(&c.statefulset),
        yaml(&c.peers_service),
        yaml(&c.http_service),
        yaml(&c.pdb),
        yaml(&c.network_policy),
        yaml(&c.service_account),
    ]
}

#[test]
fn a_four_replica_subnet_with_defaults() {
    let s = subnet("alpha", 4);
    let v = validate(&s, Some("localhost/thicket/replica:abc")).expect("valid");
    golden("four-replicas", &all(&children(&s, &v, 4)));
}

#[test]
fn a_seven_replica_subnet_with_resources_storage_and_scheduling() {
    let mut s = subnet("beta", 7);
    s.spec = serde_json::from_value(serde_json::json!({
        "replicas": 7,
        "image": "registry.example/thicket/replica:1.2.3",
        "imagePullPolicy": "Always",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "storage": {"size": "20Gi", "storageClassName": "fast-ssd"},
        "consensus": {"initialNotaryDelay": "500ms", "unitDelay": "2s", "dkgInterval": 100},
        "scheduling": {
            "nodeSelector": {"thicket.dev/pool": "replicas"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "thicket", "effect": "NoSchedule"}]
        }
    }))
    .expect("spec");
    let v = validate(&s, Some("ignored")).expect("valid");
    assert_eq!(v.faults, 2);
    // Mid scale-up: the StatefulSet follows the membership steps, not spec.replicas.
    golden("seven-replicas", &all(&children(&s, &v, 6)));
}

#[test]
fn names_and_urls_derive_from_the_subnet() {
    let n = Names::of(&subnet("alpha", 4));
    assert_eq!(
        n.admin_url("alpha-2"),
        "http://alpha-2.alpha-peers.team-a.svc.cluster.local:7001"
    );
    assert_eq!(
        n.p2p_url("alpha-0"),
        "http://alpha-0.alpha-peers.team-a.svc.cluster.local:7000"
    );
    assert_eq!(n.endpoint(), "http://alpha.team-a.svc.cluster.local");
    assert_eq!(n.ordinal("alpha-12"), Some(12));
    assert_eq!(n.ordinal("alphabet-1"), None);
    assert_eq!(n.pvc(3), "data-alpha-3");
}
