//! A real PostgreSQL server for tests: `initdb` in a temp dir, listening on a Unix
//! socket inside it (administration, trusted) and on a free 127.0.0.1 port (envault, with a
//! password, so tests can check it never leaks). Stopped and removed on drop.
//!
//! Run as root, `initdb` refuses to run, so the temp dir is given to the `postgres` user and
//! the server programs run as that user through `runuser`.
//!
//! Missing binaries fail the test: `scripts/test` installs PostgreSQL.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The password of the `postgres` role over TCP (scram-sha-256).
pub const PASSWORD: &str = "pg-Secret-7f3a9c";

/// A running (or stopped) PostgreSQL server of its own.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server programs as the `postgres` user (we are root).
    run_as_postgres: bool,
    running: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`, else the `PATH`'s.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in \
             /usr/lib/postgresql/*/bin nor on PATH: install the server \
             (apt-get install postgresql), as scripts/test does"
        )
    })
}

/// `id -u` (ours) or `id -u postgres` / `id -g postgres`.
fn user_id(of_postgres: Option<&str>) -> u32 {
    let mut cmd = Command::new("id");
    match of_postgres {
        Some(flag) => cmd.args([flag, "postgres"]),
        None => cmd.arg("-u"),
    };
    let out = check("id", cmd.output().expect("run id"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

fn check(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Postgres {
    /// initdb + start; panics (failing the test) when PostgreSQL is missing or does not start.
    pub fn start() -> Self {
        let bin = find_bin();
        let run_as_postgres = user_id(None) == 0;
        let dir = tempfile::Builder::new()
            .prefix("envault-pg")
            .tempdir()
            .expect("temp dir");
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            run_as_postgres,
            running: false,
        };
        std::fs::create_dir(pg.socket_dir()).expect("socket dir");
        let pwfile = pg.dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        if run_as_postgres {
            let (uid, gid) = (user_id(Some("-u")), user_id(Some("-g")));
            for path in [pg.dir.path().to_path_buf(), pg.socket_dir(), pwfile.clone()] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=trust",
            ])
            .arg("--auth-host=scram-sha-256")
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check("initdb", out);
        pg.start_server();
        pg
    }

    /// A server program, run as `postgres` when we are root, from the temp dir.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        check("pg_ctl start", out);
        self.running = true;
    }

    /// Restarts the server with TLS on (`ssl = on`, the given PEM certificate chain and key in
    /// its data directory) and, over TCP, only TLS connections accepted (`hostssl` lines in
    /// `pg_hba.conf` instead of `host`): a client that does not encrypt is refused.
    pub fn enable_tls(&mut self, cert_pem: &[u8], key_pem: &[u8]) {
        self.stop();
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), key_pem).expect("write server.key");
        // The server refuses a key others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        if self.run_as_postgres {
            let (uid, gid) = (user_id(Some("-u")), user_id(Some("-g")));
            for file in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(file), Some(uid), Some(gid))
                    .expect("chown to postgres");
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let hba = data.join("pg_hba.conf");
        let rules: String = std::fs::read_to_string(&hba)
            .expect("read pg_hba.conf")
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&hba, rules).expect("write pg_hba.conf");
        self.start_server();
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing committed is lost).
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Kills the server as a crash would (immediate shutdown: no checkpoint, sessions cut);
    /// the next start recovers from the WAL, so everything committed must still be there.
    pub fn crash(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Stops and starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        self.running = false;
        check("pg_ctl stop", out);
    }

    /// The server's data directory (cluster files, WAL).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` for envault: TCP, the `postgres` role with its password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with psql over the Unix socket as `postgres`; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .expect("run psql");
        String::from_utf8_lossy(&check("psql", out).stdout).into_owned()
    }

    /// `pg_dump` of a database (plain SQL format).
    pub fn pg_dump(&self, database: &str) -> Vec<u8> {
        let out = self
            .command("pg_dump")
            .args(["-U", "postgres"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), database])
            .output()
            .expect("run pg_dump");
        check("pg_dump", out).stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
