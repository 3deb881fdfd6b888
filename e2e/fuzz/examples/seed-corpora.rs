//! Writes each target's seeds into `<dir>/<target>/seed-<n>` (the start of a corpus).

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for (name, _) in thicket_fuzz::TARGETS {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d)?;
        for (i, seed) in thicket_fuzz::seeds::for_target(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
