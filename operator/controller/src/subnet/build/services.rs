//! The subnet's two Services.
//!
//! - `<subnet>-peers`, headless, publishes every pod's address, Ready or not: replicas must
//!   reach each other (and the operator their admin API) before they finalize, which is what
//!   makes them Ready.
//! - `<subnet>`, the IC HTTP interface on port 80: Ready replicas only.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ADMIN_PORT, Names, P2P_PORT, meta, selector};

fn port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

pub fn peers(names: &Names, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(names, names.peers_service(), owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(names)),
            ports: Some(vec![
                port("p2p", P2P_PORT, "p2p"),
                port("admin", ADMIN_PORT, "admin"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn http(names: &Names, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(names, names.http_service(), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(names)),
            ports: Some(vec![port("http", 80, "http")]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
