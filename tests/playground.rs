//! The playground (`cargo run --example playground`) runs the whole story against the test API server with the real
//! operator — what the kind e2e suite does on a real cluster — and ends with the migration Completed.

#[test]
fn playground_runs_the_examples_to_a_completed_migration() {
    // The examples are built by scripts/test.sh before the tests run (cargo build --examples).
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(|p| p.parent()).expect("target/<profile>");
    let playground = target.join("examples").join("playground");
    assert!(
        playground.exists(),
        "{} missing: run `cargo build --examples` first (scripts/test.sh does)",
        playground.display()
    );
    let out = std::process::Command::new(&playground)
        .output()
        .expect("run the playground");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "playground failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "PrivateNetwork/prod                        Ready 10.20.30.64/26",
        "AppDatabase/orders                         Ready To Use on prod",
        "VpnConnection/seattle                      Available",
        "Scheduled: scheduled for",
        "Completed: AppDatabase orders now lives on prod-2026",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}
