//! `docker-compose.yml`, the `Dockerfile` and the README agree with each other and with
//! the options the binary really accepts. (CI also runs a compose validator.)

use std::collections::BTreeSet;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every `LAYER2_*` variable named in `text`.
fn layer2_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("LAYER2_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn compose_environment_is_real_and_documented() {
    let compose = read("docker-compose.yml");
    let readme = read("README.md");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_layer2-relay"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut vars = layer2_vars(&compose);
    // The images are the compose file's own variables, not the node's options.
    for v in ["LAYER2_IMAGE", "LAYER2_POSTGRES_IMAGE"] {
        assert!(vars.remove(v), "compose lets {v} choose an image");
        assert!(readme.contains(v), "{v} is not in the README");
    }
    assert!(vars.len() >= 6, "{vars:?}");
    for v in &vars {
        assert!(
            help.contains(v.as_str()),
            "{v} is not an option of layer2-relay"
        );
        assert!(readme.contains(v.as_str()), "{v} is not in the README");
    }
    for port in ["7001:7777", "7002:7777", "7003:7777"] {
        assert!(compose.contains(port), "compose publishes {port}");
        assert!(
            readme.contains(&port[..4]),
            "README names port {}",
            &port[..4]
        );
    }
    for service in ["postgres:", "node1:", "node2:", "node3:", "tester:"] {
        assert!(
            compose.contains(&format!("\n  {service}")),
            "compose has {service}"
        );
        assert!(
            readme.contains(service.trim_end_matches(':')),
            "README names {service}"
        );
    }
    assert!(compose.contains("condition: service_healthy"));
    assert!(compose.contains("profiles: [\"test\"]"));
    assert!(readme.contains("docker compose up"));
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let d = read("Dockerfile");
    assert_eq!(
        d.matches("\nFROM ").count() + usize::from(d.starts_with("FROM ")),
        2,
        "two stages"
    );
    assert!(d.contains("cargo build --release --locked"));
    assert!(d.contains("USER layer2"), "runs as a non-root user");
    assert!(d.contains("LAYER2_LISTEN=0.0.0.0:7777"));
}
