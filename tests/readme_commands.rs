//! The README opens with the two commands a newcomer runs first. `.ci/run`
//! runs them exactly as written; this test catches the usual ways they
//! break before CI does: `cargo run` unable to choose a binary, a flag the
//! binary refuses, an example file that moved.

use std::process::Command;

/// The commands of the README's first code block, comments stripped.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("README.md opens with a code block");
    block
        .lines()
        .skip(1) // the fence's language tag
        .map(|line| match line.find("   #") {
            Some(comment) => line[..comment].trim(),
            None => line.trim(),
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_opens_with_a_run_command_and_a_test_command() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].starts_with("cargo run"), "{commands:?}");
    assert_eq!(commands[1], "cargo test");
}

#[test]
fn cargo_run_without_bin_runs_grace() {
    let run = &readme_commands()[0];
    if run.contains("--bin") {
        return;
    }
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    assert!(
        manifest
            .lines()
            .any(|line| line.trim() == "default-run = \"grace\""),
        "`{run}` needs `default-run = \"grace\"`: the package has several binaries"
    );
}

#[test]
fn readme_run_command_answers_with_the_built_binary() {
    let run = &readme_commands()[0];
    let (_, arguments) = run
        .split_once(" -- ")
        .unwrap_or_else(|| panic!("`{run}` passes its flags after `--`"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{} {arguments}", env!("CARGO_BIN_EXE_grace")))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run bash");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let replies = stdout.lines().count();
    assert!(replies > 0, "the demo answered nothing");
    for line in stdout.lines() {
        let reply: serde_json::Value = serde_json::from_str(line).expect("a JSON reply");
        assert!(reply["body"]["type"].is_string(), "{line}");
    }
}
