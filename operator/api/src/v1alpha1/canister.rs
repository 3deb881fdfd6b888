//! `Canister`: a WebAssembly module installed on a Subnet, kept at the module and argument the
//! manifest names (created, installed, upgraded, and stopped and deleted with the object).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A canister on a Subnet of the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "thicket.dev",
    version = "v1alpha1",
    kind = "Canister",
    namespaced,
    status = "CanisterStatus",
    shortname = "can",
    category = "thicket",
    derive = "PartialEq",
    doc = "A canister (WebAssembly module) installed on a Thicket subnet",
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(
        name = "Canister-ID",
        type_ = "string",
        json_path = ".status.canisterId"
    ),
    printcolumn(name = "Module", type_ = "string", json_path = ".status.modulePrefix"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CanisterSpec {
    /// The Subnet (same namespace) the canister lives on; fixed at creation.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.subnet is immutable: a canister does not move between subnets"))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.subnet must name a Subnet"))]
    pub subnet: String,
    /// Where the module comes from: exactly one of configMap and url.
    pub wasm: WasmSource,
    /// The argument of install and upgrade, as Candid text (for example `(42 : nat)`); none
    /// is the empty argument `()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_arg: Option<String>,
    /// Principals that control the canister, besides the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<String>,
}

/// A 64-hex-digit sha256.
const SHA256_RULE: &str = "self.matches('^[0-9a-f]{64}$')";

/// The module's source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.url)").message("spec.wasm must set exactly one of configMap and url"))]
pub struct WasmSource {
    /// A key of a ConfigMap in the canister's namespace (`binaryData`; gzip allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapWasm>,
    /// An HTTP(S) URL, pinned by its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlWasm>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapWasm {
    pub name: String,
    pub key: String,
    /// The sha256 (lowercase hex) the module must have, gzip-decompressed; any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(SHA256_RULE).message("spec.wasm.configMap.sha256 must be 64 lowercase hex digits"))]
    pub sha256: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlWasm {
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("spec.wasm.url.url must be an http:// or https:// URL"))]
    pub url: String,
    /// The sha256 (lowercase hex) of the module, gzip-decompressed.
    #[x_kube(validation = Rule::new(SHA256_RULE).message("spec.wasm.url.sha256 must be 64 lowercase hex digits"))]
    pub sha256: String,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum CanisterPhase {
    /// Waiting for its subnet or its module.
    #[default]
    Pending,
    /// Created on the subnet; the module is being installed.
    Installing,
    /// Installed at the module and argument the spec names.
    Running,
    /// Being stopped and deleted.
    Deleting,
    /// The last attempt failed (see lastError); it is retried.
    Failed,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanisterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: CanisterPhase,
    /// Ready and Progressing.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The canister's id on its subnet (textual principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canister_id: Option<String>,
    /// The subnet id it was created on (textual principal; hex registry ids from before are
    /// still recognised): a Subnet recreated under the same name is another subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// sha256 of the installed module (hex), as the subnet certifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_hash: Option<String>,
    /// Its first 12 hex digits, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_prefix: Option<String>,
    /// sha256 (hex) of the init argument last installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
