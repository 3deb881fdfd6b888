//! Writes the operator's CRDs, one YAML file each, to `crds/` and to the Helm chart's
//! `files/crds/` (which installs and upgrades them), or only to the directory given.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dirs = match std::env::args().nth(1) {
        Some(dir) => vec![std::path::PathBuf::from(dir)],
        None => vec![
            root.join("crds"),
            root.join("charts/thicket-operator/files/crds"),
        ],
    };
    for dir in dirs {
        for (name, yaml) in thicket_operator_api::crds() {
            let path = dir.join(name);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
