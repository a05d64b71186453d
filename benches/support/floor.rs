//! The floor grace's throughput is quoted against, and its workload.
//!
//! `../shared/floor/` beside the repository holds the project's floor (a
//! node that parses each request with serde_json and writes a reply of the
//! same shape, flushing when stdin has nothing buffered) and the script
//! that writes its request stream. When it is there, the throughput bench
//! builds it and runs it side by side with grace and with `grace-floor`
//! (this repository's copy of the same work), on the stream its script
//! writes. When it is not, `grace-floor` and the bench's own generator
//! stand in.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Result;

/// The shared directory (`GRACE_SHARED_DIR`, else `../shared` or
/// `../../shared` from the repository), if it holds the floor.
pub fn shared_floor_dir() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = std::env::var_os("GRACE_SHARED_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo.join("../shared"), repo.join("../../shared")]);
    candidates
        .map(|shared| shared.join("floor"))
        .find(|floor| floor.join("Cargo.toml").is_file() && floor.join("gen_workload.py").is_file())
}

/// Builds the shared floor (release) into `target_dir` and returns its
/// binary.
pub fn build_shared_floor(floor: &Path, target_dir: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(floor.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("building the shared floor in {} failed", floor.display()).into());
    }
    let release = target_dir.join("release");
    std::fs::read_dir(&release)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.is_file()
                && path.extension().is_none()
                && std::fs::metadata(path).is_ok_and(|meta| {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o111 != 0
                })
        })
        .ok_or_else(|| format!("no floor binary in {}", release.display()).into())
}

/// Writes the shared workload: `gen_workload.py MESSAGES SEED [distinct]`.
pub fn write_shared_workload(
    floor: &Path,
    path: &Path,
    messages: u64,
    seed: u64,
    distinct: bool,
) -> Result<()> {
    let mut command = Command::new("python3");
    command
        .arg(floor.join("gen_workload.py"))
        .arg(messages.to_string())
        .arg(seed.to_string());
    if distinct {
        command.arg("distinct");
    }
    let status = command.stdout(std::fs::File::create(path)?).status()?;
    if !status.success() {
        return Err("gen_workload.py failed".into());
    }
    Ok(())
}
