//! The private PostgreSQL cluster: start, databases, extensions, restart,
//! teardown.

use std::time::Instant;
use tilepipe_testkit::PgCluster;

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn cluster_lifecycle() {
    let started = Instant::now();
    let cluster = PgCluster::start(None).expect("cluster starts");
    eprintln!("cluster started in {:?}", started.elapsed());
    let dir = cluster.dir().to_path_buf();
    let pid = cluster.pid().expect("server runs");
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()))
        .exists());

    let t = Instant::now();
    let first = cluster.create_database("lifecycle one").unwrap();
    let second = cluster.create_database("lifecycle two").unwrap();
    eprintln!("two databases created in {:?}", t.elapsed());
    assert_ne!(first, second);
    assert!(first.starts_with(&format!(
        "postgresql://postgres@127.0.0.1:{}/",
        cluster.port()
    )));

    let mut a = connect(&first);
    let version: String = a.query_one("SELECT postgis_version()", &[]).unwrap().get(0);
    assert!(version.starts_with('3'), "{version}");
    let tags: String = a
        .query_one("SELECT ('name=>Vaduz, place=>town'::hstore -> 'name')", &[])
        .unwrap()
        .get(0);
    assert_eq!(tags, "Vaduz");
    a.batch_execute(
        "CREATE TABLE kept (id int, geom geometry(Point, 3857));
         INSERT INTO kept VALUES (1, ST_Transform(ST_SetSRID(ST_MakePoint(9.52, 47.14), 4326), 3857));",
    )
    .unwrap();
    drop(a);

    // The second database is independent of the first.
    let mut b = connect(&second);
    let tables: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'kept'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    drop(b);

    let port = cluster.port();
    let t = Instant::now();
    cluster.restart().unwrap();
    eprintln!("restart took {:?}", t.elapsed());
    assert_eq!(cluster.port(), port);
    assert_ne!(cluster.pid(), Some(pid));
    let mut a = connect(&first);
    let n: i64 = a
        .query_one("SELECT count(*) FROM kept", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(a);

    cluster.stop().unwrap();
    assert!(cluster.pid().is_none());
    assert!(postgres::Client::connect(&first, postgres::NoTls).is_err());
    cluster.start_again().unwrap();
    let new_pid = cluster.pid().unwrap();
    connect(&first);

    drop(cluster);
    assert!(!dir.exists(), "cluster directory removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{new_pid}")).exists(),
        "server gone"
    );
}

#[test]
fn given_directory_is_kept_and_reused() {
    let parent = tempfile::Builder::new()
        .prefix("tk-pg")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = parent.path().join("cluster");
    let url;
    {
        let cluster = PgCluster::start(Some(&dir)).unwrap();
        url = cluster.create_database("kept").unwrap();
        connect(&url)
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
            .unwrap();
    }
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "caller's directory is kept"
    );
    let cluster = PgCluster::start(Some(&dir)).unwrap();
    let x: i32 = connect(&url)
        .query_one("SELECT x FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(x, 7);
    drop(cluster);
}

#[test]
fn shared_cluster_serves_many_databases() {
    let cluster = PgCluster::shared();
    assert!(std::ptr::eq(cluster, PgCluster::shared()));
    let t = Instant::now();
    let urls: Vec<String> = (0..3)
        .map(|i| cluster.create_database(&format!("shared{i}")).unwrap())
        .collect();
    eprintln!("3 databases on the shared cluster in {:?}", t.elapsed());
    for url in urls {
        let n: i64 = connect(&url)
            .query_one(
                "SELECT count(*) FROM pg_extension WHERE extname IN ('postgis', 'hstore')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 2);
    }
}

/// A test process killed outright (no destructors, no atexit) must leave no
/// server behind, and its directory must be swept by the next start.
#[test]
fn killed_test_process_leaves_no_server() {
    use std::io::{BufRead, BufReader};
    if std::env::var_os("TESTKIT_PG_CHILD").is_some() {
        let cluster = PgCluster::shared();
        println!(
            "CLUSTER {} {}",
            cluster.pid().unwrap(),
            cluster.dir().display()
        );
        std::thread::sleep(std::time::Duration::from_secs(120));
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            // Its path in the one test binary (tests/main.rs).
            "pg::killed_test_process_leaves_no_server",
            "--nocapture",
        ])
        .env("TESTKIT_PG_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("CLUSTER "))
        .expect("child reports its cluster");
    let mut parts = line.split_whitespace().skip(1);
    let server_pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    assert!(std::path::Path::new(&format!("/proc/{server_pid}")).exists());

    child.kill().unwrap(); // SIGKILL: no destructors, no atexit
    child.wait().unwrap();
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{server_pid}")).exists() {
        assert!(
            t.elapsed().as_secs() < 20,
            "postmaster {server_pid} survived its parent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!(
        "orphaned postmaster gone {:?} after SIGKILL of its parent",
        t.elapsed()
    );
    // Any cluster start sweeps stale directories: another test of this
    // binary starting one meanwhile may have swept it already.
    drop(PgCluster::start(None).unwrap());
    assert!(
        !dir.exists(),
        "stale cluster directory swept by the next start"
    );
}
