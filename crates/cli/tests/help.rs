//! `--help` on every subcommand explains every flag (reviewed as snapshots).

use std::process::Command;

fn help(args: &[&str], flag: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_compress"))
        .args(args)
        .arg(flag)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn every_subcommand_has_help() {
    insta::assert_snapshot!("help_top", help(&[], "--help"));
    for sub in ["inspect", "eval", "convert", "finetune", "analyze"] {
        // In the short form each option has its description on the same line.
        for line in help(&[sub], "-h")
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
        {
            let parts = line.trim().split("  ").filter(|s| !s.is_empty()).count();
            assert!(parts >= 2, "{sub}: undocumented flag: {line}");
        }
        insta::assert_snapshot!(format!("help_{sub}"), help(&[sub], "--help"));
    }
}
