//! Embeds the git revision for `todo_build_info{revision}`: from
//! `TODO_GIT_REVISION` when the build sets it (container builds without
//! `.git`), else from `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TODO_GIT_REVISION");
    let revision = std::env::var("TODO_GIT_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(|| {
            let output = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves (a new commit or a checkout). `--git-path`
    // resolves each path where git keeps it: in a linked worktree, HEAD is
    // the worktree's own and refs/heads the main repository's (a path under
    // `--git-dir` would not exist there, and cargo reruns a build script
    // whose watched path is missing on every build).
    for path in ["HEAD", "refs/heads"] {
        if let Ok(output) = Command::new("git")
            .args(["rev-parse", "--git-path", path])
            .output()
            && output.status.success()
        {
            let resolved = String::from_utf8_lossy(&output.stdout).trim().to_string();
            println!("cargo:rerun-if-changed={resolved}");
        }
    }
    println!("cargo:rustc-env=TODO_GIT_REVISION={revision}");
}
