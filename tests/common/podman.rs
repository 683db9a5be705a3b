//! Rootful podman for the container tests: the settings scripts/podman.sh
//! writes (exported by scripts/test.sh), the image built from the
//! project's Dockerfile as it is, and small HTTP and polling helpers for
//! what runs in it. Absent podman settings fail loudly: the container
//! tests never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A podman command with this suite's settings (storage, runtime, limits).
pub fn podman() -> Command {
    for var in ["CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run scripts/podman.sh, then eval \"$(scripts/podman.sh env)\" \
             (scripts/test.sh does both)"
        );
    }
    let mut cmd = Command::new("podman");
    // buildah keeps the Dockerfile's cache mounts under TMPDIR.
    if let Some(tmp) = std::env::var_os("CHURN_TEST_PODMAN_TMPDIR") {
        cmd.env("TMPDIR", tmp);
    }
    cmd
}

/// Runs podman with `args`; panics with its stderr when it fails.
pub fn run(args: &[&str]) -> String {
    let out = podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e}"));
    ok(&out, &format!("podman {args:?}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The churn image, built once per test binary: the Dockerfile's runtime
/// stage as it is, with the binary the test command already built by the
/// Dockerfile's own build command (`cargo build --release --locked --bin
/// churn`; tests/deploy.rs keeps the two equal) instead of compiling every
/// crate a second time inside the builder image (13 of the cold run's 37
/// minutes). `--format docker` keeps HEALTHCHECK (OCI drops it).
/// `CHURN_TEST_FULL_IMAGE=1` builds the whole Dockerfile instead.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let tag =
            std::env::var("CHURN_TEST_IMAGE").unwrap_or_else(|_| "localhost/churn:test".into());
        let t0 = Instant::now();
        let full = std::env::var("CHURN_TEST_FULL_IMAGE").is_ok_and(|v| v == "1");
        let context = tempfile::tempdir().expect("a build context");
        let (dockerfile, dir) = if full {
            (repo().join("Dockerfile"), repo())
        } else {
            runtime_context(context.path());
            (
                context.path().join("Dockerfile"),
                context.path().to_path_buf(),
            )
        };
        let out = podman()
            .args([
                "build",
                "--format",
                "docker",
                "--pull=never",
                "--network=host",
            ])
            .arg("-f")
            .arg(&dockerfile)
            .args(["-t", &tag])
            .arg(&dir)
            .output()
            .expect("podman build");
        ok(&out, "podman build of the Dockerfile");
        eprintln!(
            "podman build of {tag} ({}): {:.1} s",
            if full {
                "whole Dockerfile"
            } else {
                "runtime stage, prebuilt binary"
            },
            t0.elapsed().as_secs_f64()
        );
        tag
    })
}

/// The binary the test command built next to this test executable
/// (`target/release/deps/<test>` → `target/release/churn`).
pub fn built_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("churn"))
        .expect("target/<profile>/churn");
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/test.sh runs `cargo build --release --locked --bin churn`)",
        bin.display()
    );
    bin
}

/// The Dockerfile's final stage (from its last `FROM`), with the binary
/// copied from the build context instead of the build stage.
pub fn runtime_stage(dockerfile: &str) -> String {
    let from = dockerfile
        .rfind("\nFROM ")
        .expect("a multi-stage Dockerfile")
        + 1;
    let stage = &dockerfile[from..];
    let copy = "COPY --from=build /usr/local/bin/churn /usr/local/bin/churn";
    assert!(
        stage.contains(copy),
        "the runtime stage copies the binary: {copy}"
    );
    stage.replace(copy, "COPY churn /usr/local/bin/churn")
}

/// A build context holding the runtime stage, the binary and config.toml.
fn runtime_context(dir: &Path) {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    std::fs::write(dir.join("Dockerfile"), runtime_stage(&dockerfile)).unwrap();
    std::fs::copy(built_binary(), dir.join("churn")).expect("copy the binary");
    std::fs::copy(repo().join("config.toml"), dir.join("config.toml")).expect("config.toml");
}

/// A port free on 127.0.0.1 right now (containers run with host networking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 request; returns (status, body). `None` when nothing
/// answers on the port.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// The payload of a chunked body (ClickHouse streams query results so).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Polls `GET path` until it answers `want`, for at most `secs`; on time
/// out shows the container's log.
pub fn wait_for(port: u16, path: &str, want: u16, secs: u64, container: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, body)) = http(port, "GET", path, "", "") {
            if status == want {
                return body;
            }
            last = Some((status, body));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs = podman().args(["logs", "--tail", "40", container]).output();
    let logs = logs.map(|o| {
        String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
    });
    panic!(
        "{container}: GET {path} never answered {want} in {secs} s (last: {last:?}); log:\n{logs:?}"
    );
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Removes containers and volumes when dropped, so a failed assertion
/// leaves nothing running.
#[derive(Default)]
pub struct Cleanup {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman().args(["rm", "-f", "-v", "-t", "2", c]).output();
        }
        for v in &self.volumes {
            let _ = podman().args(["volume", "rm", "-f", v]).output();
        }
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
