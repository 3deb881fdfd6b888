//! Who may reach the replica pods: the transport port only from the subnet's own pods, the
//! admin API only from the operator's pods (any namespace), the IC HTTP interface (calls,
//! queries, metrics) from anywhere.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{ADMIN_PORT, HTTP_PORT, Names, OPERATOR_LABEL, P2P_PORT, meta, selector};

fn ports(port: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }])
}

fn pods(labels: BTreeMap<String, String>, any_namespace: bool) -> Option<Vec<NetworkPolicyPeer>> {
    Some(vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        namespace_selector: any_namespace.then(LabelSelector::default),
        ..NetworkPolicyPeer::default()
    }])
}

pub fn build(names: &Names, owner: &OwnerReference) -> NetworkPolicy {
    let operator = BTreeMap::from([(OPERATOR_LABEL.0.to_string(), OPERATOR_LABEL.1.to_string())]);
    NetworkPolicy {
        metadata: meta(names, names.statefulset(), owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(names)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: pods(selector(names), false),
                    ports: ports(P2P_PORT),
                },
                NetworkPolicyIngressRule {
                    from: pods(operator, true),
                    ports: ports(ADMIN_PORT),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: ports(HTTP_PORT),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}
