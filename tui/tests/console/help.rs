//! `strata --help` run as a process: it names `STRATA_TOKEN` but never
//! prints the token itself (clap shows `[env: NAME=value]` unless told not to).

use std::process::Command;

#[test]
fn help_never_prints_the_token_from_the_environment() {
    let secret = "s3cret-token-value-7f3a";
    for flag in ["--help", "-h"] {
        let output = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg(flag)
            .env("STRATA_TOKEN", secret)
            .output()
            .expect("run strata");
        assert!(output.status.success(), "strata {flag}: {output:?}");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(text.contains("STRATA_TOKEN"), "the variable is still named: {text}");
        assert!(!text.contains(secret), "strata {flag} printed the token: {text}");
    }
}
