//! The Kubernetes tier: one cluster of upstream components (`e2e/cluster up`), shared by every
//! scenario in turn, then taken down with a check that nothing is left behind.
//!
//! - [`smoke`]: the cluster itself (Services, DNS, the default StorageClass) with a replica pod;
//! - [`operator`]: the operator installed by Helm runs Subnets and Canisters.
//!
//! One test function, so the scenarios share the cluster and run in order (libtest has no
//! suite-wide setup); each prints its name as it starts.

mod kubernetes {
    pub mod load;
    pub mod operator;
    pub mod smoke;
}

use kubernetes::{operator, smoke};
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
    operator::the_operator_runs_a_subnet();
    cluster.down();
}
