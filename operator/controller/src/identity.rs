//! The operator's IC identity: an Ed25519 key it calls subnets with (it controls the canisters
//! it creates). Kept in a Secret in the operator's namespace, created on first start, so that
//! a restarted or replaced operator keeps controlling its canisters.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use rand_core::{OsRng, RngCore};

pub const SECRET: &str = "thicket-operator-identity";
const KEY: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading or creating Secret {SECRET}: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {SECRET} holds no 32-byte {KEY}")]
    Malformed,
}

/// The identity from its Secret in `namespace`, created there if missing.
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
) -> Result<[u8; 32], IdentityError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    for _ in 0..2 {
        if let Some(s) = api.get_opt(SECRET).await? {
            return s
                .data
                .and_then(|mut d| d.remove(KEY))
                .and_then(|b| b.0.try_into().ok())
                .ok_or(IdentityError::Malformed);
        }
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/part-of".to_string(),
                    "thicket".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                KEY.to_string(),
                ByteString(seed.to_vec()),
            )])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(seed),
            // Another operator created it meanwhile: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IdentityError::Malformed)
}
