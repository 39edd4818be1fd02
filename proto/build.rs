fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hpo/v1/hpo.proto");
    tonic_prost_build::configure().compile_protos(&["proto/hpo/v1/hpo.proto"], &["proto"])?;
    Ok(())
}
