//! The next step for a Canister (pure): given its status, its subnet and what the subnet says
//! about the canister, create, install, upgrade, change controllers, or nothing.

use std::collections::BTreeSet;

use thicket_operator_api::v1alpha1::CanisterStatus;

/// The subnet a Canister names, as its status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    /// Textual principal.
    pub subnet_id: String,
    /// Hex of the registry id, which Canister statuses held as the subnet id before.
    pub registry_id: String,
    /// The IC HTTP interface's Service URL.
    pub endpoint: String,
    /// The root key (DER, hex) certificates are checked against.
    pub public_key: String,
    pub effective_canister_id: String,
    pub ready: bool,
}

impl SubnetInfo {
    /// Whether the canister of `status` was created on this subnet (named by its principal,
    /// or by its registry id as statuses written before the principal did).
    pub fn holds(&self, status: &CanisterStatus) -> bool {
        match status.subnet_id.as_deref() {
            Some(id) => {
                id == self.subnet_id || (!self.registry_id.is_empty() && id == self.registry_id)
            }
            None => false,
        }
    }
}

/// What the subnet's certified state says about the canister.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnSubnet {
    /// Whether the canister exists.
    pub exists: bool,
    /// sha256 of the installed module (hex); `None` when empty.
    pub module_hash: Option<String>,
    /// Its controllers (textual principals).
    pub controllers: BTreeSet<String>,
}

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub module_hash: String,
    /// sha256 of the encoded install argument (hex).
    pub arg_hash: String,
    /// Every controller, the operator included.
    pub controllers: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    WaitForSubnet(String),
    /// Create a canister (none yet, or its subnet was recreated, or it is gone).
    Create,
    /// Install the module into the empty canister.
    Install,
    /// Upgrade the installed module (a new module or a new argument).
    Upgrade,
    SetControllers,
    Idle,
}

pub fn next_step(
    status: &CanisterStatus,
    subnet: Option<&SubnetInfo>,
    on_subnet: Option<&OnSubnet>,
    desired: &Desired,
) -> Step {
    let Some(subnet) = subnet else {
        return Step::WaitForSubnet("the Subnet does not exist".into());
    };
    if !subnet.ready || subnet.public_key.is_empty() || subnet.endpoint.is_empty() {
        return Step::WaitForSubnet("the Subnet is not Ready".into());
    }
    if status.canister_id.is_none() || !subnet.holds(status) {
        return Step::Create;
    }
    let Some(c) = on_subnet else {
        return Step::WaitForSubnet("the canister's state was not read".into());
    };
    if !c.exists {
        return Step::Create;
    }
    match &c.module_hash {
        None => Step::Install,
        Some(h) if *h != desired.module_hash => Step::Upgrade,
        Some(_) if status.arg_hash.as_deref() != Some(&desired.arg_hash) => Step::Upgrade,
        Some(_) if c.controllers != desired.controllers => Step::SetControllers,
        Some(_) => Step::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> SubnetInfo {
        SubnetInfo {
            subnet_id: "s1".into(),
            registry_id: "r1".into(),
            endpoint: "http://demo.ns.svc.cluster.local".into(),
            public_key: "3081".into(),
            effective_canister_id: "i3flu-baaaa-aaaai-aaaaa-cai".into(),
            ready: true,
        }
    }

    fn desired() -> Desired {
        Desired {
            module_hash: "m2".into(),
            arg_hash: "a1".into(),
            controllers: BTreeSet::from(["op".to_string()]),
        }
    }

    fn installed(module: Option<&str>) -> OnSubnet {
        OnSubnet {
            exists: true,
            module_hash: module.map(str::to_string),
            controllers: BTreeSet::from(["op".to_string()]),
        }
    }

    fn status(arg: &str) -> CanisterStatus {
        CanisterStatus {
            canister_id: Some("c1".into()),
            subnet_id: Some("s1".into()),
            arg_hash: Some(arg.into()),
            ..CanisterStatus::default()
        }
    }

    #[test]
    fn nothing_happens_before_the_subnet_is_ready() {
        let mut s = subnet();
        s.ready = false;
        let none = CanisterStatus::default();
        assert!(matches!(
            next_step(&none, None, None, &desired()),
            Step::WaitForSubnet(_)
        ));
        assert!(matches!(
            next_step(&none, Some(&s), None, &desired()),
            Step::WaitForSubnet(_)
        ));
    }

    #[test]
    fn a_new_canister_is_created_then_installed() {
        let none = CanisterStatus::default();
        assert_eq!(
            next_step(&none, Some(&subnet()), None, &desired()),
            Step::Create
        );
        assert_eq!(
            next_step(
                &status(""),
                Some(&subnet()),
                Some(&installed(None)),
                &desired()
            ),
            Step::Install
        );
    }

    #[test]
    fn a_new_module_or_argument_upgrades_and_controllers_follow_the_spec() {
        let d = desired();
        let s = status("a1");
        assert_eq!(
            next_step(&s, Some(&subnet()), Some(&installed(Some("m1"))), &d),
            Step::Upgrade
        );
        assert_eq!(
            next_step(
                &status("a0"),
                Some(&subnet()),
                Some(&installed(Some("m2"))),
                &d
            ),
            Step::Upgrade
        );
        let mut more = installed(Some("m2"));
        more.controllers.insert("someone".into());
        assert_eq!(
            next_step(&s, Some(&subnet()), Some(&more), &d),
            Step::SetControllers
        );
        assert_eq!(
            next_step(&s, Some(&subnet()), Some(&installed(Some("m2"))), &d),
            Step::Idle
        );
    }

    #[test]
    fn a_recreated_subnet_or_a_vanished_canister_means_creating_it_again() {
        let mut other = subnet();
        other.subnet_id = "s2".into();
        assert_eq!(
            next_step(&status("a1"), Some(&other), None, &desired()),
            Step::Create
        );
        let gone = OnSubnet {
            exists: false,
            module_hash: None,
            controllers: BTreeSet::new(),
        };
        assert_eq!(
            next_step(&status("a1"), Some(&subnet()), Some(&gone), &desired()),
            Step::Create
        );
    }

    #[test]
    fn a_canister_recorded_under_the_registry_id_is_still_on_its_subnet() {
        let d = desired();
        let current = status("a0");
        let mut s = current.clone();
        s.subnet_id = Some("r1".into());
        assert!(subnet().holds(&s));
        let on = installed(Some("m2"));
        let step = next_step(&s, Some(&subnet()), Some(&on), &d);
        assert_ne!(step, Step::Create);
        assert_eq!(step, next_step(&current, Some(&subnet()), Some(&on), &d));
        s.subnet_id = Some("r2".into());
        assert_eq!(
            next_step(&s, Some(&subnet()), Some(&installed(Some("m2"))), &d),
            Step::Create
        );
    }
}
