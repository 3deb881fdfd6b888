//! Compiles `thicket/*.proto` with protox (a protobuf compiler in Rust: no `protoc` needed on
//! the build machine) and generates the tonic/prost bindings.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["thicket/p2p.proto", "thicket/admin.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
