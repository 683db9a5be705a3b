//! The single-container deploy, for real: the image built from the
//! project's Dockerfile as it is (rootful podman, local base images from
//! scripts/podman.sh), run with host networking so every packet stays on
//! 127.0.0.1. It runs as the non-root uid, its HEALTHCHECK passes, `demo`
//! then `serve` on one named volume keep events and model across a
//! restart, SIGTERM ends it with exit 0 well within the grace period,
//! `CHURN_*` overrides take effect and `/predict` answers from the host.

#[path = "common/podman.rs"]
mod podman;

use std::time::{Duration, Instant};

use podman::{Cleanup, free_port, http, image, json, run, wait_for};

/// The churn binary's baked-in arguments, for `podman exec`.
const CHURN: [&str; 3] = ["churn", "--config", "/etc/churn/config.toml"];
const TOKEN: &str = "container-test-token";

fn size_mb(reference: &str) -> f64 {
    let bytes: f64 = run(&["image", "inspect", "--format", "{{.Size}}", reference])
        .parse()
        .expect("image size in bytes");
    bytes / 1e6
}

#[test]
fn image_is_small_non_root_and_keeps_its_healthcheck() {
    let image = image();
    let user = run(&["image", "inspect", "--format", "{{.Config.User}}", image]);
    assert_eq!(user, "churn");
    let health = run(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck}}",
        image,
    ]);
    assert!(
        health.contains("/healthz"),
        "HEALTHCHECK kept in the image (docker format): {health}"
    );
    let entry = run(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        image,
    ]);
    assert!(entry.contains("/etc/churn/config.toml"), "{entry}");

    // The base is made by debootstrap here, a little larger than the
    // published slim image: report the two apart.
    let total = size_mb(image);
    let base = size_mb("docker.io/library/debian:bookworm-slim");
    let churn = total - base;
    eprintln!("image {image}: {total:.1} MB = base {base:.1} MB + churn layers {churn:.1} MB");
    eprintln!(
        "{}",
        run(&["history", "--format", "{{.Size}}\t{{.CreatedBy}}", image])
            .lines()
            .take(8)
            .map(|l| l.chars().take(140).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total <= 120.0, "image is {total:.1} MB (target 120 MB)");
    assert!(churn <= 50.0, "churn's layers are {churn:.1} MB");
}

/// Starts the image detached with host networking on `port`, the admin
/// token and the listen address set by `CHURN_*` variables.
fn start(name: &str, volume: &str, port: u16, args: &[&str]) {
    let port_env = format!("CHURN_SERVER__PORT={port}");
    let token_env = format!("CHURN_SERVER__ADMIN_TOKEN={TOKEN}");
    let mount = format!("{volume}:/var/lib/churn");
    let mut cmd = vec![
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-v",
        &mount,
        // The image listens on 0.0.0.0 for port publishing; host
        // networking here stays on loopback.
        "-e",
        "CHURN_SERVER__HOST=127.0.0.1",
        "-e",
        &port_env,
        "-e",
        &token_env,
        "-e",
        "RUST_LOG=warn",
        // Answers from the stored snapshot, so the answer before and after
        // the restart is the same number (live features move with the
        // clock: tests/api/live.rs covers them).
        "-e",
        "CHURN_FEATURES__LIVE=false",
        image(),
    ];
    cmd.extend_from_slice(args);
    run(&cmd);
}

fn predict(port: u16, user: u64) -> serde_json::Value {
    let (status, body) = http(port, "POST", &format!("/predict?user_id={user}"), "", "")
        .expect("churn answers on the host's loopback");
    assert_eq!(status, 200, "{body}");
    json(&body)
}

fn stats(name: &str) -> serde_json::Value {
    let mut args = vec!["exec", name];
    args.extend_from_slice(&CHURN);
    args.extend_from_slice(&["stats", "--json"]);
    json(&run(&args))
}

#[test]
fn demo_then_serve_on_a_named_volume_survives_a_restart() {
    let tag = format!("churn-test-{}", std::process::id());
    let (first, second, volume) = (
        format!("{tag}-demo"),
        format!("{tag}-serve"),
        format!("{tag}-data"),
    );
    let mut cleanup = Cleanup::default();
    cleanup.volumes.push(volume.clone());
    cleanup.containers.extend([first.clone(), second.clone()]);
    run(&["volume", "create", &volume]);
    let port = free_port();

    // The demo's default population: enough history for a model that
    // beats the recency rule and is promoted.
    start(&first, &volume, port, &["demo"]);
    wait_for(port, "/readyz", 200, 600, &first);

    // The process runs as the image's non-root user.
    assert_eq!(run(&["exec", &first, "id", "-u"]), "10001");
    assert_eq!(run(&["exec", &first, "id", "-un"]), "churn");
    // HEALTHCHECK is never scheduled here: run it as the engine would.
    run(&["healthcheck", "run", &first]);

    let before = predict(port, 7);
    let version = before["model_version"].clone();
    assert!(
        before["churn_probability"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)),
        "{before}"
    );
    // CHURN_SERVER__ADMIN_TOKEN took effect: the admin API wants it.
    let (status, _) = http(port, "GET", "/admin/models", "", "").unwrap();
    assert_eq!(status, 401);
    let (status, models) = http(
        port,
        "GET",
        "/admin/models",
        &format!("authorization: Bearer {TOKEN}\r\n"),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{models}");
    let events = stats(&first);
    assert!(events["events"].as_u64().is_some_and(|n| n > 0), "{events}");

    // SIGTERM (podman stop) ends it with exit 0, well within the 10 s grace.
    let t0 = Instant::now();
    run(&["stop", "-t", "10", &first]);
    let stopped_in = t0.elapsed();
    let code = run(&["inspect", "--format", "{{.State.ExitCode}}", &first]);
    assert_eq!(code, "0", "exit code after SIGTERM");
    assert!(
        stopped_in < Duration::from_secs(8),
        "stopped in {stopped_in:?}"
    );
    eprintln!(
        "podman stop (SIGTERM) took {:.2} s, exit 0",
        stopped_in.as_secs_f64()
    );
    run(&["rm", &first]);

    // `serve` on the same volume: the events and the model are still there.
    start(&second, &volume, port, &["serve"]);
    wait_for(port, "/readyz", 200, 120, &second);
    let after = predict(port, 7);
    assert_eq!(
        after["model_version"], version,
        "the model survived the restart"
    );
    assert_eq!(after["churn_probability"], before["churn_probability"]);
    assert_eq!(
        stats(&second),
        events,
        "the event store survived the restart"
    );
    drop(cleanup);
}
