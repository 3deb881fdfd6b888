//! Compiling Motoko canisters with the `motoko` npm package (the Motoko compiler running in
//! Node), for tests and for deploying the sample canisters in `e2e/canisters` (found at run
//! time: [`canisters_dir`]). Needs `node` and
//! `npm`; the package is installed on first use with `npm ci` (idempotent; the version is
//! pinned by `e2e/canisters/package-lock.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the compiler's npm package (with `compile.js`) and the sample canisters are:
/// `$THICKET_MOTOKO_DIR`, or `e2e/canisters` of the Thicket checkout the current directory is
/// in. Nothing is compiled into the binary, so an installed `thicket` works anywhere: it
/// needs this directory only to compile `.mo` files (a `.wasm` module needs nothing).
pub fn canisters_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("THICKET_MOTOKO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let here = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    here.ancestors()
        .map(|d| d.join("e2e/canisters"))
        .find(|d| d.join("compile.js").is_file())
        .ok_or_else(|| {
            format!(
                "compiling Motoko needs the `motoko` npm package of a Thicket checkout's \
                 e2e/canisters: run from inside a checkout, set THICKET_MOTOKO_DIR to that \
                 directory, or give a compiled .wasm module instead (not found above {})",
                here.display()
            )
        })
}

/// Makes sure `e2e/canisters/node_modules` holds the Motoko compiler, the JavaScript agents
/// and icp-cli (`npm ci`, pinned by package-lock.json, run once per process at most).
pub fn ensure_installed() -> Result<PathBuf, String> {
    let tools = canisters_dir()?;
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let installed = [
        "motoko",
        "@dfinity/agent",
        "@dfinity/candid",
        "@dfinity/principal",
        "@icp-sdk/core",
        "@icp-sdk/icp-cli-linux-x64",
    ]
    .iter()
    .all(|p| tools.join("node_modules").join(p).exists());
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&tools)
            .status()
            .map_err(|e| format!("running npm (Node and npm compile Motoko canisters): {e}"))?;
        if !status.success() {
            return Err(format!("npm ci in {} failed", tools.display()));
        }
    }
    Ok(tools)
}

/// The `icp` binary of icp-cli (the IC's current command line), from its npm package.
pub fn icp_cli() -> Result<PathBuf, String> {
    let bin = ensure_installed()?.join("node_modules/@icp-sdk/icp-cli-linux-x64/bin/icp");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} is missing after npm ci", bin.display()))
    }
}

/// Compiles a `.mo` file to an IC Wasm module.
pub fn compile(src: &Path) -> Result<Vec<u8>, String> {
    let tools = ensure_installed()?;
    let stem = src
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{} is not a Motoko file name", src.display()))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("thicket-moc-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join(format!("{stem}.wasm"));
    let result = Command::new("node")
        .arg(tools.join("compile.js"))
        .arg(src)
        .arg(&out)
        .output()
        .map_err(|e| format!("running node: {e}"))?;
    let wasm = if result.status.success() {
        std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))
    } else {
        Err(format!(
            "moc failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&result.stderr)
        ))
    };
    let _ = std::fs::remove_dir_all(&dir);
    wasm
}

/// Compiles `e2e/canisters/NAME.mo`.
pub fn compile_sample(name: &str) -> Result<Vec<u8>, String> {
    compile(&canisters_dir()?.join(format!("{name}.mo")))
}
