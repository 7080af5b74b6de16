//! A real PostgreSQL for tests, in this order:
//! 1. `DATABASE_URL`, if set (a server you run; each test gets its own database there,
//!    dropped afterwards);
//! 2. an ephemeral cluster started from the local PostgreSQL binaries (`initdb`,
//!    `pg_ctl`, on `PATH` or under `/usr/lib/postgresql/*/bin`), once per test process,
//!    on a free port, removed by a watchdog when the process ends;
//! 3. with the cargo feature `testcontainers`, a PostgreSQL container, where a Docker
//!    engine answers;
//! 4. otherwise the test fails, saying how to provide one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

const HOW: &str = "set DATABASE_URL to a PostgreSQL server you can create databases on \
    (e.g. postgres://postgres@127.0.0.1:5432/postgres), or install PostgreSQL's server \
    binaries (Debian: apt-get install postgresql) so tests can start their own";

/// A fresh database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of the new database.
    pub url: String,
    name: String,
    admin: String,
    drop_after: bool,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.drop_after {
            // The ephemeral cluster is removed whole when the process ends.
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                    }
                });
            }
        })
        .join();
    }
}

struct Cluster {
    admin_url: String,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new, empty database. Panics with instructions when no PostgreSQL can be had.
pub async fn test_database() -> TestDb {
    let (admin, drop_after) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => match CLUSTER.get_or_init(start_cluster) {
            Ok(c) => (c.admin_url.clone(), false),
            Err(e) => panic!("no PostgreSQL for tests: {e}. To fix: {HOW}"),
        },
    };
    let name = format!(
        "layer2_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test PostgreSQL at {admin}: {e}. {HOW}"));
    let sql = format!("CREATE DATABASE \"{name}\"");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = conn.close().await;
    TestDb {
        url: replace_db(&admin, &name),
        name,
        admin,
        drop_after,
    }
}

/// The admin URL of the ephemeral cluster (started on first use), for tests that need
/// the server itself rather than a database.
pub fn cluster_url() -> Result<String, String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => CLUSTER
            .get_or_init(start_cluster)
            .as_ref()
            .map(|c| c.admin_url.clone())
            .map_err(Clone::clone),
    }
}

/// `url` with its database name replaced by `db`.
fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let host = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{db}?{q}"),
        None => format!("{host}/{db}"),
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    // Highest major version last.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command, run as the `postgres` user when we are root (initdb refuses root).
fn pg_command(root: bool, bin: &Path, args: &[&str]) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn start_cluster() -> Result<Cluster, String> {
    let local = start_local_cluster();
    #[cfg(feature = "testcontainers")]
    if let Err(local_err) = &local {
        return start_container().map_err(|e| format!("{local_err}; and no container either: {e}"));
    }
    local
}

/// A PostgreSQL container, kept running by a thread of its own for the rest of the
/// process (testcontainers' reaper removes it afterwards).
#[cfg(feature = "testcontainers")]
fn start_container() -> Result<Cluster, String> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return drop(tx.send(Err(e.to_string()))),
        };
        rt.block_on(async move {
            match Postgres::default().start().await {
                Ok(container) => match container.get_host_port_ipv4(5432).await {
                    Ok(port) => {
                        let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
                        let _ = tx.send(Ok(url));
                        // Keep the container for the life of the process.
                        std::future::pending::<()>().await;
                        drop(container);
                    }
                    Err(e) => drop(tx.send(Err(e.to_string()))),
                },
                Err(e) => drop(tx.send(Err(format!("Docker engine: {e}")))),
            }
        });
    });
    let url = rx.recv().map_err(|e| e.to_string())??;
    Ok(Cluster { admin_url: url })
}

/// A fresh, initialised cluster directory: `(dir, data)`.
fn init_cluster(bin: &Path, root: bool) -> Result<(String, String), String> {
    let dir = std::env::temp_dir().join(format!(
        "layer2-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root {
        let mut c = Command::new("chown");
        c.args(["postgres:postgres"]).arg(&dir);
        run(c, "chown of the cluster directory to postgres")?;
    }
    let data = dir.join("data").to_string_lossy().to_string();
    let dir = dir.to_string_lossy().to_string();
    run(
        pg_command(
            root,
            &bin.join("initdb"),
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        ),
        "initdb",
    )?;
    Ok((dir, data))
}

/// Starts the cluster in `data` on `port` and waits until it accepts connections.
/// `crashes`: the test will kill the server, so every commit must reach the OS before
/// it returns (`synchronous_commit` on; no fsync is needed while the OS itself lives).
fn pg_start(
    bin: &Path,
    root: bool,
    dir: &str,
    data: &str,
    port: u16,
    crashes: bool,
) -> Result<(), String> {
    // Tests trade durability for speed; benchmarks set LAYER2_TEST_PG_DURABLE=1 to
    // measure PostgreSQL's default, durable settings.
    let fast = if std::env::var_os("LAYER2_TEST_PG_DURABLE").is_some() {
        ""
    } else if crashes {
        "-c fsync=off -c full_page_writes=off"
    } else {
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {dir} {fast} \
         -c max_connections=400 -c shared_buffers=256MB"
    );
    let log = format!("{dir}/server.log");
    run(
        pg_command(
            root,
            &bin.join("pg_ctl"),
            &[
                "-D", data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
            ],
        ),
        "pg_ctl start",
    )
}

/// Initialises and starts a cluster on a free port (with its watchdog): `(dir, data,
/// port)`.
fn start_fresh(bin: &Path, root: bool, crashes: bool) -> Result<(String, String, u16), String> {
    let (dir, data) = init_cluster(bin, root)?;
    let mut last_err = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        match pg_start(bin, root, &dir, &data, port, crashes) {
            Ok(()) => {
                spawn_watchdog(root, bin, &data, &dir)?;
                return Ok((dir, data, port));
            }
            // Most likely the port was taken between probing and binding: try another.
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

fn start_local_cluster() -> Result<Cluster, String> {
    let bin = find_bin_dir().ok_or("no initdb/pg_ctl on PATH or under /usr/lib/postgresql")?;
    let (_, _, port) = start_fresh(&bin, is_root(), false)?;
    Ok(Cluster {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    })
}

/// A PostgreSQL cluster of one test's own, which it may stop and start again (outage
/// tests; the shared cluster serves every other test in the process). Needs the local
/// server binaries. Stopped and removed when dropped, or when the process exits.
#[derive(Debug)]
pub struct OwnCluster {
    /// Connection URL of its `postgres` database.
    pub url: String,
    bin: PathBuf,
    root: bool,
    dir: String,
    data: String,
    port: u16,
}

impl OwnCluster {
    /// Creates and starts a cluster.
    pub fn start() -> Result<OwnCluster, String> {
        let bin = find_bin_dir().ok_or(
            "outage tests need PostgreSQL's server binaries (Debian: apt-get install postgresql)",
        )?;
        let root = is_root();
        let (dir, data, port) = start_fresh(&bin, root, true)?;
        Ok(OwnCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            root,
            dir,
            data,
            port,
        })
    }

    /// Stops it at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) -> Result<(), String> {
        run(
            pg_command(
                self.root,
                &self.bin.join("pg_ctl"),
                &["-D", &self.data, "-m", "immediate", "-w", "stop"],
            ),
            "pg_ctl stop",
        )
    }

    /// The server's log so far (for a failing test's message).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(format!("{}/server.log", self.dir)).unwrap_or_default()
    }

    /// Freezes every process of the cluster (SIGSTOP): a database that keeps its
    /// connections open and answers nothing, like a paused container.
    pub fn pause(&self) -> Result<(), String> {
        self.signal("STOP")
    }

    /// Lets a paused cluster run again (SIGCONT).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("CONT")
    }

    /// Sends `sig` to the postmaster, then to every process it started: the
    /// postmaster first, so that a stopped one forks no backend the scan would miss.
    fn signal(&self, sig: &str) -> Result<(), String> {
        let pidfile = format!("{}/postmaster.pid", self.data);
        let text = std::fs::read_to_string(&pidfile).map_err(|e| format!("{pidfile}: {e}"))?;
        let master = text.lines().next().unwrap_or("").trim().to_string();
        let kill = |pids: &[String]| {
            let mut cmd = Command::new("kill");
            cmd.arg(format!("-{sig}")).args(pids);
            run(cmd, "kill")
        };
        kill(std::slice::from_ref(&master))?;
        let mut children = Vec::new();
        for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
            let Ok(entry) = entry else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(master.as_str()) {
                children.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        // A backend may exit between the scan and the signal: not an error.
        if !children.is_empty() {
            let _ = kill(&children);
        }
        Ok(())
    }

    /// Starts it again on the same port.
    pub fn restart(&self) -> Result<(), String> {
        pg_start(&self.bin, self.root, &self.dir, &self.data, self.port, true)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.resume();
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops the cluster and removes its directory once this process has exited.
fn spawn_watchdog(root: bool, bin: &Path, data: &str, dir: &str) -> Result<(), String> {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if root {
        format!(
            "runuser -u postgres -- {} -D {data} -m immediate stop",
            pg_ctl.display()
        )
    } else {
        format!("{} -D {data} -m immediate stop", pg_ctl.display())
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("starting the cluster watchdog: {e}"))
}

#[cfg(test)]
mod tests {
    use super::replace_db;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_db("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(replace_db("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            replace_db("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
