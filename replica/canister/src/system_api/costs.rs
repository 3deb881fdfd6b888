//! The `ic0.cost_*` imports: what this subnet charges for what a canister may do, so that
//! canisters built for the IC (whose libraries ask before they attach cycles) run unchanged,
//! and the `ic0.env_var_*` imports of a canister's environment variables (its settings'
//! `environment_variables`, in name order).

use wasmtime::{Caller, Linker};

use super::{Env, Ptr, copy_out, read, trap, write};

/// What creating a canister costs (the IC's fee on a 13-node subnet), taken from the cycles
/// attached to `create_canister`.
pub const CREATE_CANISTER_FEE: u128 = 500_000_000_000;

/// `cost_sign_with_*` / `cost_vetkd_derive_key`: no threshold key has this name (the subnet
/// holds none of these keys).
const UNKNOWN_KEY_NAME: i32 = 2;

fn cost(c: &mut Caller<'_, Env>, dst: u64, cycles: u128) -> wasmtime::Result<()> {
    write(c, dst, &cycles.to_le_bytes())
}

pub(super) fn link<I: Ptr>(l: &mut Linker<Env>) -> wasmtime::Result<()> {
    // Messages between canisters carry no fee on a Thicket subnet, and no HTTP outcalls leave
    // it (the management canister refuses `http_request`): both cost nothing.
    let free =
        |mut c: Caller<'_, Env>, _size: i64, _other_size: i64, dst: I| cost(&mut c, dst.get(), 0);
    l.func_wrap("ic0", "cost_call", free)?;
    l.func_wrap("ic0", "cost_http_request", free)?;
    l.func_wrap(
        "ic0",
        "cost_create_canister",
        |mut c: Caller<'_, Env>, dst: I| cost(&mut c, dst.get(), CREATE_CANISTER_FEE),
    )?;
    for name in [
        "cost_sign_with_ecdsa",
        "cost_sign_with_schnorr",
        "cost_vetkd_derive_key",
    ] {
        l.func_wrap(
            "ic0",
            name,
            |mut c: Caller<'_, Env>,
             src: I,
             size: I,
             _algorithm: i32,
             _dst: I|
             -> wasmtime::Result<i32> {
                read(&mut c, src.get(), size.get())?;
                Ok(UNKNOWN_KEY_NAME)
            },
        )?;
    }
    l.func_wrap("ic0", "env_var_count", |c: Caller<'_, Env>| -> I {
        I::of(c.data().ctx.env_vars.len() as u64)
    })?;
    l.func_wrap(
        "ic0",
        "env_var_name_size",
        |c: Caller<'_, Env>, index: I| -> wasmtime::Result<I> {
            let (name, _) = var_at(&c, index.get())?;
            Ok(I::of(name.len() as u64))
        },
    )?;
    l.func_wrap(
        "ic0",
        "env_var_name_copy",
        |mut c: Caller<'_, Env>, index: I, dst: I, off: I, size: I| {
            let (name, _) = var_at(&c, index.get())?;
            copy_out(&mut c, name.as_bytes(), dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap(
        "ic0",
        "env_var_name_exists",
        |mut c: Caller<'_, Env>, src: I, size: I| -> wasmtime::Result<i32> {
            let name = read(&mut c, src.get(), size.get())?;
            Ok(i32::from(var_named(&c, &name).is_ok()))
        },
    )?;
    l.func_wrap(
        "ic0",
        "env_var_value_size",
        |mut c: Caller<'_, Env>, src: I, size: I| -> wasmtime::Result<I> {
            let name = read(&mut c, src.get(), size.get())?;
            Ok(I::of(var_named(&c, &name)?.len() as u64))
        },
    )?;
    l.func_wrap(
        "ic0",
        "env_var_value_copy",
        |mut c: Caller<'_, Env>, src: I, size: I, dst: I, off: I, len: I| {
            let name = read(&mut c, src.get(), size.get())?;
            let value = var_named(&c, &name)?;
            copy_out(&mut c, value.as_bytes(), dst.get(), off.get(), len.get())
        },
    )?;
    Ok(())
}

/// The environment variable at `index` (by name order).
fn var_at(c: &Caller<'_, Env>, index: u64) -> wasmtime::Result<(String, String)> {
    let vars = &c.data().ctx.env_vars;
    match usize::try_from(index).ok().and_then(|i| vars.get(i)) {
        Some(v) => Ok(v.clone()),
        None => trap(format!(
            "environment variable index {index} out of range: the canister has {}",
            vars.len()
        )),
    }
}

/// The value of the environment variable `name`.
fn var_named(c: &Caller<'_, Env>, name: &[u8]) -> wasmtime::Result<String> {
    let vars = &c.data().ctx.env_vars;
    match vars.iter().find(|(n, _)| n.as_bytes() == name) {
        Some((_, v)) => Ok(v.clone()),
        None => trap(format!(
            "no environment variable {:?}",
            String::from_utf8_lossy(name)
        )),
    }
}
