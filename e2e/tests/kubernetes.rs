//! The Kubernetes tier: one cluster of upstream components (`e2e/cluster up`), shared by every
//! scenario in turn, then taken down with a check that nothing is left behind.
//!
//! - [`smoke`]: the cluster itself (Services, DNS, the default StorageClass) with a replica pod;
//! - [`operator`]: the operator installed by Helm runs Subnets and Canisters, and IC tools
//!   ([`tools`]: icp-cli, the HTTP gateway) work through the subnet's Service;
//! - [`monitoring`]: Prometheus scrapes them; dashboards and alerts work on its data.
//!
//! One test function, so the scenarios share the cluster and run in order (libtest has no
//! suite-wide setup); each prints its name as it starts.

mod kubernetes {
    pub mod load;
    pub mod monitoring;
    pub mod operator;
    pub mod smoke;
    pub mod tools;
}

use kubernetes::{monitoring, operator, smoke};
use thicket_e2e::{Cluster, require_privileges};

#[test]
fn kubernetes_tier() {
    if !require_privileges("kubernetes_tier") {
        return;
    }
    let cluster = Cluster::up();
    eprintln!("== scenario: a replica pod answers through a Service and cluster DNS");
    smoke::a_replica_pod_answers_through_a_service_and_cluster_dns();
    eprintln!("== scenario: the operator runs a subnet");
    let demo = operator::the_operator_runs_a_subnet();
    eprintln!("== scenario: dashboards and alerts on a real Prometheus");
    monitoring::dashboards_and_alerts_on_a_real_prometheus(&demo);
    eprintln!("== scenario: deleting the Canister and the Subnet removes everything");
    operator::deleting_removes_everything(demo);
    cluster.down();
}
