//! The operator process: command line, tracing, the HTTP endpoint, leader election, and the
//! controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use thicket_operator_api::v1alpha1::{Canister, Subnet};

use crate::context::{Config, Context};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::server::{Health, router};
use crate::{canister, subnet};

#[derive(clap::Parser, Debug)]
#[command(
    name = "thicket-operator",
    about = "Reconciles Thicket Subnets and Canisters"
)]
pub struct Args {
    /// The replica image of Subnets whose spec names none.
    #[arg(long, env = "THICKET_REPLICA_IMAGE")]
    pub replica_image: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,
    /// Run without leader election (a single operator outside the cluster, for development).
    #[arg(long)]
    pub no_leader_election: bool,
    /// The namespace of the leader election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, default_value = "thicket-operator")]
    pub lease_name: String,
    /// This candidate's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Export spans to this OpenTelemetry collector (OTLP/HTTP base URL, e.g.
    /// http://otel-collector.monitoring:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let otlp = args.otlp_endpoint.clone().filter(|e| !e.is_empty());
    let instance = args
        .identity
        .clone()
        .unwrap_or_else(|| std::process::id().to_string());
    let _telemetry = thicket_telemetry::init_filtered(
        "thicket-operator",
        &instance,
        otlp.as_deref(),
        "info,kube=warn",
    )?;
    tokio::runtime::Runtime::new()
        .context("starting the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Two TLS stacks (the Kubernetes client's, the agents' and downloads') link rustls with more
    // than one crypto provider; pick ring, as the replicas do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    metrics.register(crate::subnet::CONTROLLER, &crate::subnet::REASONS);
    metrics.register(crate::canister::CONTROLLER, &crate::canister::REASONS);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding {}", args.http_listen))?;
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, router(health)).await });

    if !args.no_leader_election {
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("thicket-operator-{}", std::process::id()));
        let elector = Elector::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
        );
        // Followers are ready (they serve metrics and wait); only the leader acts.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(identity, lease = %args.lease_name, "waiting to lead");
        elector.acquire().await;
        tracing::info!(identity, "leading");
        tokio::spawn(async move {
            elector.hold().await;
            tracing::error!("lost the leader lease; exiting so that only one operator acts");
            std::process::exit(1);
        });
    }
    ready.store(true, Ordering::Relaxed);

    let identity = crate::identity::load_or_create(&client, &args.lease_namespace)
        .await
        .context("the operator's identity")?;
    let config = Config {
        replica_image: args.replica_image.filter(|i| !i.is_empty()),
        identity,
    };
    tracing::info!(
        principal = %crate::canister::agent::operator_principal(&identity),
        "the operator's identity"
    );
    let ctx = Arc::new(Context::new(client.clone(), config, metrics));
    let subnets = Api::<Subnet>::all(client.clone());
    // Pods are the StatefulSet's, not the Subnet's: map them back by their instance label.
    let pods = Api::<Pod>::all(client.clone());
    let pod_config = watcher::Config::default().labels("app.kubernetes.io/name=thicket-replica");
    // Canisters follow their module's ConfigMap and their Subnet (Ready, recreated) too.
    let canister_ctrl = Controller::new(
        Api::<Canister>::all(client.clone()),
        watcher::Config::default(),
    );
    let by_config_map = canister_ctrl.store();
    let by_subnet = canister_ctrl.store();
    let canisters = canister_ctrl
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
            move |cm: ConfigMap| {
                let (ns, name) = (cm.namespace(), cm.name_any());
                by_config_map
                    .state()
                    .into_iter()
                    .filter(|c| {
                        c.namespace() == ns
                            && c.spec
                                .wasm
                                .config_map
                                .as_ref()
                                .is_some_and(|w| w.name == name)
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Subnet>::all(client.clone()),
            watcher::Config::default(),
            move |s: Subnet| {
                let (ns, name) = (s.namespace(), s.name_any());
                by_subnet
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && c.spec.subnet == name)
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(canister::reconcile, canister::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "canister controller");
            }
        });
    let subnets = Controller::new(subnets, watcher::Config::default())
        .owns(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(pods, pod_config, |pod: Pod| {
            let subnet = pod.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::<Subnet>::new(&subnet).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(subnet::reconcile, subnet::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "subnet controller");
            }
        });
    futures::join!(subnets, canisters);
    tracing::info!("stopped");
    Ok(())
}
