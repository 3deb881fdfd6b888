//! Installing code: install, reinstall and upgrade (stable memory kept), with the module's
//! checks (size, gzip, exports) before anything changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use candid::Principal;
use thicket_canister::{CanisterMemory, Compiled, ModuleInfo, PageMap, Runtime};

use super::*;
use crate::canister::{Module, context};
use crate::limits::{INSTALL_INSTRUCTION_LIMIT, MAX_WASM_BYTES};
use crate::reject::{Reject, exec_reject};
use crate::state::SubnetState;

impl SubnetState {
    pub(super) fn install_code(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        by: &ChangeOrigin,
        a: InstallCodeArgs,
    ) -> Result<(), Reject> {
        let mut spent = 0;
        let result = self.install_code_inner(rt, caller, by, a, &mut spent);
        self.batch_instructions += spent;
        result
    }

    fn install_code_inner(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        by: &ChangeOrigin,
        a: InstallCodeArgs,
        spent: &mut u64,
    ) -> Result<(), Reject> {
        let id = a.canister_id;
        let now = self.time_ns;
        let c = self.controlled(&id, caller)?;
        let module = validated_module(rt, &id, &a.wasm_module)?;
        let compiled = module.compiled(rt).map_err(|e| exec_reject(&id, e))?;
        let info = ModuleInfo::parse(&module.wasm).map_err(|e| exec_reject(&id, e))?;
        let mut next = c.clone();
        next.module = Some(module);
        next.version += 1;
        next.installed_ns = now;
        next.global_timer = 0;
        let (memory, entry) = match &a.mode {
            InstallMode::Install | InstallMode::Reinstall => {
                if a.mode == InstallMode::Install && c.module.is_some() {
                    return Err(Reject::new(
                        538,
                        format!("Canister {id} already has a module; use reinstall or upgrade"),
                    ));
                }
                next.certified_data.clear();
                next.extra.log.purge();
                (CanisterMemory::default(), "canister_init")
            }
            InstallMode::Upgrade(opts) => {
                let opts = opts.clone().unwrap_or_default();
                let Some(old) = &c.module else {
                    return Err(Reject::new(
                        537,
                        format!("Canister {id} is empty: there is no module to upgrade"),
                    ));
                };
                let keep = opts.wasm_memory_persistence == Some(WasmMemoryPersistence::Keep);
                let old_info = ModuleInfo::parse(&old.wasm).map_err(|e| exec_reject(&id, e))?;
                if old_info.keeps_main_memory() && !keep {
                    return Err(Reject::new(
                        504,
                        "Missing upgrade option: enhanced orthogonal persistence requires the \
                         `wasm_memory_persistence = opt variant { keep }` upgrade option",
                    ));
                }
                if keep && !info.keeps_main_memory() {
                    return Err(Reject::new(
                        504,
                        "Invalid upgrade option: `wasm_memory_persistence = keep` requires a new \
                         module with enhanced orthogonal persistence",
                    ));
                }
                let mut memory = (*c.memory).clone();
                let old_compiled = old.compiled(rt).map_err(|e| exec_reject(&id, e))?;
                if opts.skip_pre_upgrade != Some(true)
                    && old_compiled.has_export("canister_pre_upgrade")
                {
                    let ctx = context(&id, c, caller.as_slice(), "", &[], now);
                    let out = rt.execute(
                        &old_compiled,
                        &memory,
                        "canister_pre_upgrade",
                        ctx,
                        INSTALL_INSTRUCTION_LIMIT,
                    );
                    *spent += out.instructions;
                    next.log_execution(now, &out.debug_output, None);
                    out.result.map_err(|e| {
                        let r = exec_reject(&id, e);
                        Reject {
                            message: format!(
                                "Upgrading {id} failed in canister_pre_upgrade: {}",
                                r.message
                            ),
                            ..r
                        }
                    })?;
                    if let Some(m) = out.memory {
                        memory = m;
                    }
                }
                // The stable memory survives every upgrade; the main memory only with `keep`,
                // which loads the new module's data segments into it and resets the globals.
                let heap = if keep {
                    let mut heap = memory.heap.to_vec();
                    info.apply_data_segments(&mut heap)
                        .map_err(|e| exec_reject(&id, e))?;
                    PageMap::from_bytes(&heap)
                } else {
                    PageMap::default()
                };
                (
                    CanisterMemory {
                        heap,
                        globals: BTreeMap::new(),
                        stable: memory.stable,
                    },
                    "canister_post_upgrade",
                )
            }
        };
        // The module's (start) function, then init or post_upgrade, on the new memory.
        let ctx = context(&id, &next, caller.as_slice(), "", &a.arg, now);
        let out = rt.initialize(&compiled, &memory, entry, ctx, INSTALL_INSTRUCTION_LIMIT);
        *spent += out.instructions;
        let printed = out.debug_output.clone();
        if out.result.is_ok() {
            next.log_execution(now, &printed, None);
        }
        out.result.map_err(|e| {
            let r = exec_reject(&id, e);
            tracing::debug!(canister = %id, output = ?printed, "install failed");
            Reject {
                message: format!("Installing code on {id} failed in {entry}: {}", r.message),
                ..r
            }
        })?;
        next.memory = Arc::new(out.memory.unwrap_or(memory));
        next.global_timer = out.global_timer;
        if let Some(d) = out.certified_data {
            next.certified_data = d;
        }
        let mode = match &a.mode {
            InstallMode::Install => CodeDeploymentMode::Install,
            InstallMode::Reinstall => CodeDeploymentMode::Reinstall,
            InstallMode::Upgrade(_) => CodeDeploymentMode::Upgrade,
        };
        let module_hash = next
            .module
            .as_ref()
            .map_or_else(Vec::new, |m| m.hash.to_vec());
        let deployment = CodeDeploymentRecord { mode, module_hash };
        next.record(now, by.clone(), ChangeDetails::CodeDeployment(deployment));
        *self
            .canisters
            .get_mut(&id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))? = next;
        if !matches!(a.mode, InstallMode::Upgrade(_)) {
            // New code cannot run the old code's callbacks.
            self.reset_calls(&id);
        }
        Ok(())
    }
}

/// The module `bytes` (inflated if gzip-compressed), once it compiles, its metadata sections
/// read and its exports are those the IC allows: what install and snapshot loads accept.
pub(super) fn validated_module(
    rt: &Runtime,
    id: &Principal,
    bytes: &[u8],
) -> Result<Module, Reject> {
    let wasm = decompress(bytes)?;
    let metadata =
        thicket_canister::module_info::metadata(&wasm).map_err(|e| exec_reject(id, e))?;
    let module = Module::new(wasm);
    let compiled = module.compiled(rt).map_err(|e| exec_reject(id, e))?;
    check_exports(&compiled, id)?;
    // Read once here to refuse a malformed module; kept, not read again.
    let _ = module.metadata.set(Arc::new(metadata));
    Ok(module)
}

/// The module as given, or inflated if it is gzip-compressed (as dfx and icp-cli send it).
fn decompress(bytes: &[u8]) -> Result<Vec<u8>, Reject> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b, 0x08]) {
        if bytes.len() > MAX_WASM_BYTES {
            return Err(Reject::new(
                505,
                format!("The Wasm module is larger than {MAX_WASM_BYTES} bytes"),
            ));
        }
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(bytes).take(MAX_WASM_BYTES as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| {
        Reject::new(
            505,
            format!("The gzip-compressed Wasm module does not inflate: {e}"),
        )
    })?;
    if out.len() > MAX_WASM_BYTES {
        return Err(Reject::new(
            505,
            format!("The Wasm module inflates to more than {MAX_WASM_BYTES} bytes"),
        ));
    }
    Ok(out)
}

/// The IC's rule for exports: `canister_`-prefixed names are entry points the system knows.
fn check_exports(compiled: &Compiled, id: &Principal) -> Result<(), Reject> {
    const SYSTEM: [&str; 7] = [
        "canister_init",
        "canister_pre_upgrade",
        "canister_post_upgrade",
        "canister_inspect_message",
        "canister_heartbeat",
        "canister_global_timer",
        "canister_on_low_wasm_memory",
    ];
    for name in compiled.export_names() {
        let known = SYSTEM.contains(&name.as_str())
            || [
                "canister_update ",
                "canister_query ",
                "canister_composite_query ",
            ]
            .iter()
            .any(|p| name.starts_with(p));
        if name.starts_with("canister_") && !known {
            return Err(Reject::new(
                505,
                format!(
                    "Canister {id}'s Wasm module exports {name:?}, which is not an IC entry point"
                ),
            ));
        }
    }
    Ok(())
}
