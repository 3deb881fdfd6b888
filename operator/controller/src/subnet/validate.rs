//! Validation of a Subnet's spec (pure): what the API server's CEL rules already refuse is
//! checked again (an operator must not trust that its CRD is current), and the spec is
//! turned into the values the builders and genesis use.

use k8s_openapi::api::core::v1::ResourceRequirements;
use thicket_operator_api::v1alpha1::Subnet;
use thicket_operator_api::v1alpha1::subnet::SchedulingSpec;
use thicket_types::registry::SubnetParams;

/// Smallest subnet: n = 3f + 1 with f = 1.
pub const MIN_REPLICAS: i32 = 4;
/// Largest subnet the operator manages (every replica talks to every other).
pub const MAX_REPLICAS: i32 = 64;
/// Shortest DKG interval a replica accepts.
pub const MIN_DKG_INTERVAL: i64 = 10;
/// Most dealings a block carries: enough for a 64-replica subnet's resharing in a few blocks.
const DKG_DEALINGS_PER_BLOCK: usize = 16;
/// Largest block, in ingress messages.
pub const MAX_INGRESS_PER_BLOCK: i64 = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("spec.replicas must be between {MIN_REPLICAS} and {MAX_REPLICAS}, not {0}")]
    Replicas(i32),
    #[error("{field} must be a duration such as 300ms or 1s, not {value:?}")]
    Duration { field: &'static str, value: String },
    #[error("spec.consensus.dkgInterval must be at least {MIN_DKG_INTERVAL}, not {0}")]
    DkgInterval(i64),
    #[error(
        "spec.consensus.maxIngressPerBlock must be between 1 and {MAX_INGRESS_PER_BLOCK}, not {0}"
    )]
    MaxIngressPerBlock(i64),
    #[error(
        "spec.image is not set and the operator has no default replica image (the chart's replica.image)"
    )]
    NoImage,
    #[error("the Subnet has no name or namespace")]
    Unnamed,
}

/// The spec, checked and resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub replicas: i32,
    /// Faults tolerated, ⌊(n−1)/3⌋.
    pub faults: i32,
    pub image: String,
    pub image_pull_policy: String,
    pub resources: Option<ResourceRequirements>,
    pub storage_size: String,
    pub storage_class: Option<String>,
    pub params: SubnetParams,
    pub scheduling: SchedulingSpec,
    /// Advice that does not stop the subnet.
    pub warnings: Vec<String>,
}

/// Parses a Kubernetes-style duration (`300ms`, `1s`, `1m30s`, `1.5s`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    (total.is_finite() && total < 1e12).then_some(total.round() as u64)
}

/// Checks `subnet` and resolves it against the operator's default replica image.
pub fn validate(
    subnet: &Subnet,
    default_image: Option<&str>,
) -> Result<Validated, ValidationError> {
    if subnet.metadata.name.is_none() || subnet.metadata.namespace.is_none() {
        return Err(ValidationError::Unnamed);
    }
    let spec = &subnet.spec;
    let n = spec.replicas;
    if !(MIN_REPLICAS..=MAX_REPLICAS).contains(&n) {
        return Err(ValidationError::Replicas(n));
    }
    let duration = |field, value: &str| {
        parse_duration_ms(value).ok_or(ValidationError::Duration {
            field,
            value: value.to_string(),
        })
    };
    let c = &spec.consensus;
    let initial_notary_delay_ms =
        duration("spec.consensus.initialNotaryDelay", &c.initial_notary_delay)?;
    let unit_delay_ms = duration("spec.consensus.unitDelay", &c.unit_delay)?;
    if c.dkg_interval < MIN_DKG_INTERVAL {
        return Err(ValidationError::DkgInterval(c.dkg_interval));
    }
    if !(1..=MAX_INGRESS_PER_BLOCK).contains(&c.max_ingress_per_block) {
        return Err(ValidationError::MaxIngressPerBlock(c.max_ingress_per_block));
    }
    let image = spec
        .image
        .clone()
        .or(default_image.map(str::to_string))
        .filter(|i| !i.is_empty())
        .ok_or(ValidationError::NoImage)?;
    let faults = (n - 1) / 3;
    let mut warnings = Vec::new();
    if n != 3 * faults + 1 {
        warnings.push(format!(
            "spec.replicas is {n}: it tolerates {faults} faulty replicas, as {} would \
             (subnets of 3f+1 replicas use every replica's vote)",
            3 * faults + 1
        ));
    }
    Ok(Validated {
        replicas: n,
        faults,
        image,
        image_pull_policy: spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into()),
        resources: spec.resources.clone(),
        storage_size: spec.storage.size.clone(),
        storage_class: spec.storage.storage_class_name.clone(),
        params: SubnetParams {
            unit_delay_ms,
            initial_notary_delay_ms,
            dkg_interval_length: c.dkg_interval as u64,
            dkg_dealings_per_block: DKG_DEALINGS_PER_BLOCK,
            max_ingress_per_block: c.max_ingress_per_block as usize,
        },
        scheduling: spec.scheduling.clone().unwrap_or_default(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subnet::testing::subnet;

    #[test]
    fn durations_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_duration_ms("300ms"), Some(300));
        assert_eq!(parse_duration_ms("1s"), Some(1000));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("10"), None);
        assert_eq!(parse_duration_ms("5d"), None);
        assert_eq!(parse_duration_ms("s"), None);
    }

    #[test]
    fn a_four_replica_subnet_resolves_to_its_genesis_parameters() {
        let v = validate(&subnet("a", 4), Some("replica:1")).expect("valid");
        assert_eq!(v.faults, 1);
        assert_eq!(v.image, "replica:1");
        assert_eq!(v.params.initial_notary_delay_ms, 300);
        assert_eq!(v.params.unit_delay_ms, 1000);
        assert_eq!(v.params.dkg_interval_length, 50);
        assert_eq!(v.params.max_ingress_per_block, 1000);
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn the_block_size_is_the_specs_within_bounds() {
        let mut s = subnet("a", 4);
        s.spec.consensus.max_ingress_per_block = 2500;
        let v = validate(&s, Some("r")).expect("valid");
        assert_eq!(v.params.max_ingress_per_block, 2500);
        for bad in [0, -1, MAX_INGRESS_PER_BLOCK + 1] {
            s.spec.consensus.max_ingress_per_block = bad;
            let e = validate(&s, Some("r")).expect_err("out of bounds");
            assert_eq!(e, ValidationError::MaxIngressPerBlock(bad));
            assert!(e.to_string().contains("spec.consensus.maxIngressPerBlock"));
        }
    }

    #[test]
    fn sizes_other_than_3f_plus_1_are_warned_about_and_below_4_refused() {
        let v = validate(&subnet("a", 5), Some("r")).expect("valid");
        assert_eq!(v.faults, 1);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("spec.replicas is 5"));
        assert_eq!(
            validate(&subnet("a", 3), Some("r")),
            Err(ValidationError::Replicas(3))
        );
    }

    #[test]
    fn a_bad_duration_and_a_missing_image_name_their_field() {
        let mut s = subnet("a", 4);
        s.spec.consensus.unit_delay = "soon".into();
        let e = validate(&s, Some("r")).expect_err("bad duration");
        assert!(e.to_string().contains("spec.consensus.unitDelay"));
        let e = validate(&subnet("a", 4), None).expect_err("no image");
        assert_eq!(e, ValidationError::NoImage);
    }
}
