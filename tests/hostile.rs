//! Hostile clients against a real `churn serve` process over real sockets
//! (issue 13): memory per request measured as the server's peak RSS,
//! slow uploads and slow heads, the connection cap, hyper's own error
//! answers, and bounded generate requests and shutdown.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "hostile-admin-token";

/// A `churn serve` child, killed if the test fails before stopping it.
struct Server {
    child: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--port", "0"])
            .env("RUST_LOG", "warn")
            .env("CHURN_SERVER__ADMIN_TOKEN", TOKEN)
            .env("CHURN_SCHEDULE__ENABLED", "false")
            .env("CHURN_SERVER__REGISTRY_POLL_MS", "0")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("churn serving on http://") {
                let addr = rest.trim().to_string();
                std::thread::spawn(move || lines.for_each(drop));
                return Server {
                    child: Some(child),
                    addr,
                    _dir: dir,
                };
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server never started: {seen:?}");
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Peak resident memory of the server process, bytes.
    fn vm_hwm(&self) -> u64 {
        status_kib(self.pid(), "VmHWM") * 1024
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits up to `limit` for the process to exit.
    fn exited_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        while started.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Sends raw bytes, returns (status, parsed JSON body) of the answer.
fn raw(addr: &str, request: &[u8]) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before taking the whole request.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_answer(&out)
}

/// Status and JSON body of an error answer.
fn parse_answer(out: &[u8]) -> (u16, Value) {
    let (status, body) = parse_any(out);
    assert!(body["error"].is_string(), "{body}");
    assert!(body["error_type"].is_string(), "{body}");
    (status, body)
}

/// Status and JSON body of any answer.
fn parse_any(out: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"));
    (status, body)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Finding 1: a 16 MB body of `{}` lines (5.6 million rejects) costs a
/// small multiple of its size, alone and three at once.
#[tokio::test]
async fn a_body_of_tiny_bad_lines_costs_a_small_multiple_of_its_size() {
    let server = Server::start(&[]);
    let http = client();
    let body: bytes::Bytes = b"{}\n".repeat(5_592_395).into();
    // Warm up the allocator and the store with a small request.
    let warm = http
        .post(server.url("/events"))
        .body("{}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let before = server.vm_hwm();
    let answer: Value = http
        .post(server.url("/events"))
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["rejected"], 5_592_395, "every line counted");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1_000);
    let one = server.vm_hwm() - before;
    let posts = (0..3).map(|_| {
        let (http, url, body) = (http.clone(), server.url("/events"), body.clone());
        async move { http.post(url).body(body).send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(
        statuses.iter().all(|s| s.as_u16() == 200),
        "three 16 MB bodies fit the in-flight budget: {statuses:?}"
    );
    let three = server.vm_hwm() - before;
    let mib = |b: u64| b as f64 / 1_048_576.0;
    eprintln!(
        "peak RSS growth: one 16 MB body {:.1} MiB, three at once {:.1} MiB",
        mib(one),
        mib(three)
    );
    // The seed code grew by 1.75 GB for one such body.
    assert!(one < 8 * body.len() as u64, "one body: {:.1} MiB", mib(one));
    assert!(
        three < 16 * body.len() as u64,
        "three bodies: {:.1} MiB",
        mib(three)
    );
}

/// Finding 1, second half: bodies in flight over the budget are refused
/// with 429 instead of buffered.
#[tokio::test]
async fn bodies_beyond_the_in_flight_budget_are_refused() {
    let server = Server::start(&[
        ("CHURN_SERVER__MAX_BODY_BYTES", "80000"),
        ("CHURN_SERVER__MAX_INFLIGHT_BODY_BYTES", "100000"),
    ]);
    // Holds 60 kB of the 100 kB budget while it trickles in.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        slow,
        "POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 80000\r\n\r\n"
    )
    .unwrap();
    slow.write_all(&vec![b'\n'; 60_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let body = b"{}\n".repeat(16_000);
    let mut request = format!(
        "POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (status, answer) = raw(&server.addr, &request);
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error_type"], "overloaded");
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.write_all(&request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let (status, _) = parse_any(&out);
    assert_eq!(
        status, 200,
        "the budget comes back once the slow body is gone"
    );
}

fn raise_open_files(want: u64) {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert!(
            lim.rlim_cur >= want,
            "need {want} open files, the hard limit is {}",
            lim.rlim_max
        );
    }
}

/// Finding 2: thousands of connections trickling bodies and heads hold no
/// request permit: `/healthz` answers within a second throughout, work
/// routes are not shed, and the server ends them at its deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_lock_anyone_out() {
    const SLOW_BODIES: usize = 2_000;
    const SLOW_HEADS: usize = 500;
    raise_open_files(8_192);
    let server = Server::start(&[
        ("CHURN_SERVER__BODY_READ_TIMEOUT_SECS", "6"),
        ("CHURN_SERVER__HEADER_READ_TIMEOUT_SECS", "4"),
        // Small enough that the attackers would take every permit, were
        // permits held while bodies trickle in.
        ("CHURN_SERVER__MAX_CONCURRENT_REQUESTS", "64"),
    ]);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut bodies = Vec::with_capacity(SLOW_BODIES);
    for _ in 0..SLOW_BODIES {
        let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
            .await
            .unwrap();
        bodies.push(s);
    }
    let mut heads = Vec::with_capacity(SLOW_HEADS);
    for _ in 0..SLOW_HEADS {
        let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(b"POST /events HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        heads.push(s);
    }
    eprintln!(
        "{} slow connections open after {:?}",
        SLOW_BODIES + SLOW_HEADS,
        started.elapsed()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for round in 0..6 {
        // Every slow body gets one more byte, every slow head one more
        // header byte: they are alive, just slow.
        for s in bodies.iter_mut() {
            let _ = s.write_all(b" ").await;
        }
        for s in heads.iter_mut() {
            let _ = s.write_all(b"x").await;
        }
        let t = Instant::now();
        let health = http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: /healthz failed: {e}"));
        assert_eq!(health.status(), 200);
        worst = worst.max(t.elapsed());
        let predict = http
            .post(server.url("/predict?user_id=1"))
            .send()
            .await
            .unwrap();
        assert_ne!(predict.status(), 429, "work routes are not shed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("slowest /healthz under attack: {worst:?}");
    assert!(worst < Duration::from_secs(1));
    // Past the header deadline the slow heads are closed without an
    // answer; past the body deadline the slow bodies get a JSON 408.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut head = heads.pop().unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), head.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a slow head is closed"
    );
    let mut body = bodies.pop().unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), body.read_to_end(&mut buf)).await;
    let (status, answer) = parse_answer(&buf);
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error_type"], "body_timeout");
    eprintln!("slow-client test took {:?}", started.elapsed());
}

/// Finding 2: past `server.max_connections` a connection gets a JSON 503
/// at once, and the server accepts again when one closes.
#[tokio::test]
async fn the_connection_cap_answers_with_json() {
    let server = Server::start(&[("CHURN_SERVER__MAX_CONNECTIONS", "20")]);
    let held: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, answer) = raw(&server.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error_type"], "too_many_connections");
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// Finding 7: every error is JSON, including the ones hyper answers itself.
#[test]
fn every_error_answer_is_json() {
    let server = Server::start(&[]);
    let addr = server.addr.as_str();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "unknown method on a known route",
            b"DELETE /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            405,
        ),
        (
            "long URI",
            format!("GET /predict?user_id=1&{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(10_000))
                .into_bytes(),
            414,
        ),
        (
            "large head",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(40_000))
                .into_bytes(),
            431,
        ),
        (
            "head over hyper's own buffer",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(400_000))
                .into_bytes(),
            431,
        ),
        (
            "oversized /predict/batch",
            b"POST /predict/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 17000000\r\n\r\n{\"user_ids\":[".to_vec(),
            413,
        ),
        (
            "malformed generate body",
            format!("POST /admin/events/generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 4\r\n\r\n{{\"us").into_bytes(),
            400,
        ),
        (
            "unbounded generate",
            {
                let b = r#"{"users":1,"days":4294967295}"#;
                format!("POST /admin/events/generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{b}", b.len()).into_bytes()
            },
            400,
        ),
        (
            "admin without a token",
            b"POST /admin/retrain HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec(),
            401,
        ),
    ];
    for (what, request, want) in cases {
        let mut request = request;
        // Ask for the connection to end after the answer.
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            request.splice(at..at, b"\r\nconnection: close".iter().copied());
        }
        eprintln!("case: {what}");
        let (status, body) = raw(addr, &request);
        assert_eq!(status, want, "{what}: {body}");
    }
}

/// Finding 6: a huge generate request stops when its client leaves, and
/// SIGTERM ends the process within the grace period.
#[test]
fn a_cancelled_generate_stops_and_shutdown_is_bounded() {
    let mut server = Server::start(&[("CHURN_SERVER__SHUTDOWN_GRACE_SECS", "3")]);
    let body = r#"{"users":100000,"days":120}"#;
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /admin/events/generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    drop(s);
    // The generator notices within a batch; CPU use then drops to idle.
    std::thread::sleep(Duration::from_secs(2));
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = ticks(server.pid()) - before;
    // 2 s of wall time is 200 ticks per busy core.
    assert!(used < 40, "{used} CPU ticks in 2 s after the client left");
    // A second generate is in flight when SIGTERM arrives.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /admin/events/generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.sigterm();
    let took = server.exited_within(Duration::from_secs(12));
    eprintln!("exit after SIGTERM: {took:?}");
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(8)),
        "grace 3 s; exit took {took:?}"
    );
    drop(s);
}

/// Finding 8: a duplicated key refuses the event the same way on an
/// NDJSON line and inside a JSON array.
#[tokio::test]
async fn duplicate_keys_are_one_rule_for_arrays_and_ndjson() {
    let server = Server::start(&[]);
    let http = client();
    let event = r#"{"user_id":1,"user_id":2,"event_time":1700000000,"event_type":"login"}"#;
    let mut reasons = Vec::new();
    for body in [event.to_string(), format!("[{event}]")] {
        let answer: Value = http
            .post(server.url("/events"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["accepted"], 0, "{body}: {answer}");
        assert_eq!(answer["rejected"], 1, "{body}: {answer}");
        reasons.push(answer["errors"][0]["error"].as_str().unwrap().to_string());
    }
    assert!(reasons[0].contains("duplicate"), "{reasons:?}");
    assert_eq!(reasons[0], reasons[1]);
}
