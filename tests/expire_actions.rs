//! Expiry actions on a mod_tile tile directory: the per-zoom policy, the
//! summary, renders through a recording sink and through renderd's
//! protocol (a fake renderd counting requests in flight), tile lists.

use std::fs::{self, File, FileTimes};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tilepipe::expire::actions::{
    expire, write_tile_list, ExpirePolicy, ListGranularity, ListMode, NoRender, RenderCounts,
    RenderReport, RenderSink, RenderdSink, RenderdSinkOptions,
};
use tilepipe::metatile::{TileState, TileStore};
use tilepipe::renderd::{read_message, write_message, Command, Endpoint, Request};
use tilepipe::tile::{Metatile, Tile};
use tokio::net::UnixListener;

/// Records submissions and answers them all `Done`.
#[derive(Default)]
struct RecordingSink {
    submitted: Vec<(String, Metatile)>,
    pending: Vec<Metatile>,
}

impl RenderSink for RecordingSink {
    type Error = std::convert::Infallible;

    async fn submit(&mut self, style: &str, metatile: Metatile) -> Result<(), Self::Error> {
        self.submitted.push((style.to_string(), metatile));
        self.pending.push(metatile);
        Ok(())
    }

    async fn finish(&mut self) -> RenderReport {
        let mut report = RenderReport::default();
        for metatile in self.pending.drain(..) {
            report.zooms.entry(metatile.z).or_default().done += 1;
        }
        report
    }
}

fn meta(z: u8, x: u32, y: u32) -> Metatile {
    Tile::new(z, x, y).unwrap().metatile()
}

/// A tile directory with metatiles at z2..=z16 around one place; the z14
/// one is missing.
fn populated_store(dir: &std::path::Path) -> (TileStore, Vec<Metatile>) {
    let store = TileStore::new(dir);
    let place = Tile::new(16, 34_920, 21_300).unwrap();
    let metatiles: Vec<Metatile> = (2..=16)
        .map(|z| place.ancestor(16 - z).metatile())
        .collect();
    for &m in &metatiles {
        if m.z != 14 {
            store.write("osm", m, &[b"tile".to_vec()]).unwrap();
        }
    }
    (store, metatiles)
}

#[tokio::test]
async fn policy_renders_touches_deletes_and_skips_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = populated_store(dir.path());
    let policy = ExpirePolicy {
        style: "osm".into(),
        min_zoom: 0,
        max_zoom: 15,
        touch_from: Some(10),
        delete_from: Some(13),
        render_missing: false,
        zoom_floor: tilepipe::expire::actions::FIRST_EXPIRED_ZOOM,
    };
    let mut sink = RecordingSink::default();
    // Duplicates (any tile of a metatile names it) are merged.
    let mut input = metatiles.clone();
    input.push(Metatile {
        z: 9,
        x: metatiles[7].x + 3,
        y: metatiles[7].y + 5,
    });
    let summary = expire(&store, &policy, input, &mut sink).await.unwrap();

    // z2 is never expired; z16 is above max: both untouched.
    assert_eq!(summary.outside_zooms, 2);
    let rendered: Vec<u8> = sink.submitted.iter().map(|(_, m)| m.z).collect();
    assert_eq!(rendered, [9, 8, 7, 6, 5, 4, 3], "high zooms first");
    assert!(sink.submitted.iter().all(|(style, _)| style == "osm"));
    let total = summary.total();
    assert_eq!(total.rendered, 7);
    assert_eq!(
        total.replies,
        RenderCounts {
            done: 7,
            ..Default::default()
        }
    );
    assert_eq!(total.touched, 3, "z10-z12");
    assert_eq!(total.deleted, 2, "z13 and z15");
    assert_eq!(total.missing, 1, "z14");
    assert_eq!(summary.zooms[&14].missing, 1);
    assert_eq!(summary.zooms[&12].touched, 1);
    assert!(summary.is_success());
    assert_eq!(
        (summary.render_error.as_ref(), summary.store_error.as_ref()),
        (None, None)
    );

    for &m in &metatiles {
        let state = store.stat("osm", m).unwrap();
        match m.z {
            10..=12 => assert!(
                matches!(state, TileState::Dirty { touched: true, .. }),
                "{m}"
            ),
            13..=15 => assert_eq!(state, TileState::Missing, "{m}"),
            _ => assert!(matches!(state, TileState::Clean(_)), "{m}"),
        }
    }
    let text = summary.to_string();
    assert!(text.lines().last().unwrap().starts_with(" all"), "{text}");
    assert_eq!(text.lines().count(), 2 + 13, "{text}");

    // Again: touched ones stay as they are, deleted ones are missing.
    let summary = expire(&store, &policy, metatiles.clone(), &mut sink)
        .await
        .unwrap();
    let total = summary.total();
    assert_eq!((total.touched, total.already_touched), (0, 3));
    assert_eq!(total.already_dirty, 3, "touched tiles are dirty");
    assert_eq!((total.deleted, total.missing), (0, 3));
}

#[tokio::test]
async fn missing_metatiles_are_rendered_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = populated_store(dir.path());
    let mut policy = ExpirePolicy::new("osm");
    policy.render_missing = true;
    let mut sink = RecordingSink::default();
    let summary = expire(&store, &policy, metatiles.clone(), &mut sink)
        .await
        .unwrap();
    assert_eq!(
        summary.total().rendered,
        14,
        "z3-z16 including the missing z14"
    );
    assert_eq!(summary.total().missing, 0);

    // Touch and delete never create or act on missing files.
    policy.touch_from = Some(3);
    let summary = expire(&store, &policy, metatiles, &mut NoRender)
        .await
        .unwrap();
    assert_eq!(summary.total().missing, 1);
    assert_eq!(summary.total().touched, 13);
}

#[tokio::test]
async fn planet_import_complete_decides_what_was_already_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = populated_store(dir.path());
    let mut policy = ExpirePolicy::new("osm");
    policy.touch_from = Some(3);
    // Planet import completed after the tiles were rendered: all dirty.
    let planet = dir.path().join("planet-import-complete");
    File::create(&planet)
        .unwrap()
        .set_times(FileTimes::new().set_modified(SystemTime::now() + Duration::from_secs(60)))
        .unwrap();
    let summary = expire(&store, &policy, metatiles, &mut NoRender)
        .await
        .unwrap();
    assert_eq!(summary.total().touched, 13);
    assert_eq!(summary.total().already_dirty, 13);
}

#[tokio::test]
async fn a_policy_without_renders_needs_no_renderer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = populated_store(dir.path());
    let mut policy = ExpirePolicy::new("osm");
    policy.min_zoom = 10;
    policy.touch_from = Some(10);
    assert!(!policy.renders());
    let summary = expire(&store, &policy, metatiles.clone(), &mut NoRender)
        .await
        .unwrap();
    assert!(summary.is_success());
    // With renders, NoRender fails them but the touches still happen.
    policy.touch_from = Some(12);
    let summary = expire(&store, &policy, metatiles, &mut NoRender)
        .await
        .unwrap();
    assert_eq!(summary.total().rendered, 2);
    assert_eq!(summary.total().replies.failed, 2);
    assert!(!summary.is_success());
}

#[tokio::test]
async fn store_errors_are_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = TileStore::new(dir.path());
    fs::create_dir_all(dir.path().join("osm")).unwrap();
    // A file where the z10 directory should be: ENOTDIR means "not there",
    // as for mod_tile.
    fs::write(dir.path().join("osm/10"), b"").unwrap();
    // A symlink loop as the z11 directory: a real error.
    std::os::unix::fs::symlink("11", dir.path().join("osm/11")).unwrap();
    store
        .write("osm", meta(12, 8, 8), &[b"x".to_vec()])
        .unwrap();
    let mut policy = ExpirePolicy::new("osm");
    policy.delete_from = Some(3);
    let input = [meta(10, 8, 8), meta(11, 8, 8), meta(12, 8, 8)];
    let summary = expire(&store, &policy, input, &mut NoRender).await.unwrap();
    assert_eq!(summary.zooms[&10].missing, 1);
    assert_eq!(summary.zooms[&11].errors, 1);
    assert_eq!(summary.zooms[&12].deleted, 1, "the run goes on");
    let error = summary.store_error.clone().unwrap();
    assert!(error.contains("osm/11/0/0/0/0/136.meta"), "{error}");
    assert!(!summary.is_success());
}

/// A fake renderd that answers after a pause and records how many
/// requests were in flight at once.
struct FakeRenderd {
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Request>>>,
}

fn fake_renderd(path: &std::path::Path, pause: Duration) -> FakeRenderd {
    fake_renderd_answering(path, pause, |request| match request.z {
        // Pretend the style stops at z17.
        18.. => Command::Ignore,
        _ if request.command == Command::Dirty => Command::NotDone,
        _ => Command::Done,
    })
}

/// [`fake_renderd`] answering what `answer` says.
fn fake_renderd_answering(
    path: &std::path::Path,
    pause: Duration,
    answer: impl Fn(&Request) -> Command + Clone + Send + 'static,
) -> FakeRenderd {
    let listener = UnixListener::bind(path).unwrap();
    let fake = FakeRenderd {
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
        requests: Arc::default(),
    };
    let (in_flight, max_in_flight, requests) = (
        fake.in_flight.clone(),
        fake.max_in_flight.clone(),
        fake.requests.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (in_flight, max_in_flight, requests) =
                (in_flight.clone(), max_in_flight.clone(), requests.clone());
            let answer = answer.clone();
            tokio::spawn(async move {
                while let Ok(Some(request)) = read_message(&mut stream).await {
                    requests.lock().unwrap().push(request.clone());
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(pause).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let reply = answer(&request);
                    write_message(&mut stream, &request.reply(reply))
                        .await
                        .unwrap();
                }
            });
        }
    });
    fake
}

#[tokio::test]
async fn renderd_sink_limits_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("renderd.sock");
    let fake = fake_renderd(&socket, Duration::from_millis(30));
    let store = TileStore::new(dir.path().join("tiles"));
    let metatiles: Vec<Metatile> = (0..20).map(|i| meta(12, 8 * i, 16)).collect();
    for &m in &metatiles {
        store.write("osm", m, &[b"x".to_vec()]).unwrap();
    }
    let extra = meta(18, 800, 800);
    store.write("osm", extra, &[b"x".to_vec()]).unwrap();
    let mut policy = ExpirePolicy::new("osm");
    policy.max_zoom = 18;
    let mut sink = RenderdSink::new(
        Endpoint::Unix(socket.clone()),
        store.clone(),
        RenderdSinkOptions {
            concurrency: 3,
            ..Default::default()
        },
    );
    let input = metatiles.iter().copied().chain([extra]);
    let summary = expire(&store, &policy, input, &mut sink).await.unwrap();
    assert_eq!(summary.zooms[&12].rendered, 20);
    assert_eq!(summary.zooms[&12].replies.done, 20);
    assert_eq!(summary.zooms[&18].replies.ignored, 1);
    assert!(summary.is_success());
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 3);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 21);
    assert!(requests.iter().all(|r| r.command == Command::RenderBulk
        && r.x % 8 == 0
        && r.y % 8 == 0
        && r.style == "osm"));

    // The sink is reusable, here with cmdDirty.
    let mut dirty = RenderdSink::new(
        Endpoint::Unix(socket),
        store.clone(),
        RenderdSinkOptions {
            concurrency: 2,
            command: Command::Dirty,
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let summary = expire(&store, &policy, metatiles.clone(), &mut dirty)
            .await
            .unwrap();
        assert_eq!(summary.zooms[&12].replies.not_done, 20);
    }
}

/// renderd answers cmdNotDone when its queues are full (the request is
/// deferred or dropped) or the render failed: such a metatile must not be
/// left looking fresh.
#[tokio::test]
async fn metatiles_renderd_does_not_render_are_marked_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("renderd.sock");
    let store = TileStore::new(dir.path().join("tiles"));
    let metatiles: Vec<Metatile> = (0..6).map(|i| meta(12, 8 * i, 16)).collect();
    for &m in &metatiles {
        store.write("osm", m, &[b"x".to_vec()]).unwrap();
    }
    // Every other metatile refused; the one at x=40 is also made
    // unmarkable (a symlink loop where its file was) before the refusal.
    let unmarkable = store.path("osm", metatiles[5], None).unwrap();
    let _fake = fake_renderd_answering(&socket, Duration::ZERO, move |request| {
        if request.x == 40 {
            let _ = fs::remove_file(&unmarkable);
            std::os::unix::fs::symlink(&unmarkable, &unmarkable).unwrap();
        }
        match request.x % 16 {
            0 => Command::Done,
            _ => Command::NotDone,
        }
    });
    let policy = ExpirePolicy::new("osm");
    let mut sink = RenderdSink::new(
        Endpoint::Unix(socket),
        store.clone(),
        RenderdSinkOptions::default(),
    );
    let summary = expire(&store, &policy, metatiles[..5].iter().copied(), &mut sink)
        .await
        .unwrap();
    let replies = summary.zooms[&12].replies;
    assert_eq!((replies.done, replies.not_done), (3, 2), "{summary}");
    assert_eq!(
        (replies.marked_dirty, replies.unmarked),
        (2, 0),
        "{summary}"
    );
    for &m in &metatiles[..5] {
        let state = store.stat("osm", m).unwrap();
        match m.x % 16 {
            0 => assert!(matches!(state, TileState::Clean(_)), "{m}: {state:?}"),
            _ => assert!(
                matches!(state, TileState::Dirty { touched: true, .. }),
                "{m}: {state:?}"
            ),
        }
    }
    // Nothing lost: each refusal is recorded on disk, as a touch would.
    assert!(summary.is_success(), "{summary}");
    assert!(summary.to_string().contains("dirtied"));

    // A refused metatile that cannot be marked dirty fails the run, so
    // the daemon keeps its expiry queued and tries again.
    let summary = expire(&store, &policy, [metatiles[5]], &mut sink)
        .await
        .unwrap();
    let replies = summary.zooms[&12].replies;
    assert_eq!((replies.not_done, replies.unmarked), (1, 1), "{summary}");
    assert!(!summary.is_success(), "{summary}");
    let error = summary.render_error.clone().unwrap();
    assert!(error.contains("dirty"), "{error}");
}

#[tokio::test]
async fn unreachable_renderd_fails_fast_and_touches_still_happen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = populated_store(dir.path());
    let mut policy = ExpirePolicy::new("osm");
    policy.touch_from = Some(10);
    let mut sink = RenderdSink::new(
        Endpoint::Unix(dir.path().join("nobody.sock")),
        store.clone(),
        RenderdSinkOptions {
            concurrency: 2,
            attempts: 2,
            retry_delay: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    let summary = expire(&store, &policy, metatiles, &mut sink).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let total = summary.total();
    assert_eq!(total.rendered, 7);
    assert_eq!(total.replies.failed, 7);
    assert_eq!(total.touched, 6, "z10-z16 but the missing z14");
    let error = summary.render_error.clone().unwrap();
    assert!(error.contains("nobody.sock"), "{error}");
    assert!(!summary.is_success());
}

#[test]
fn tile_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expired.list");
    let metatiles = [meta(1, 1, 1), meta(12, 2050, 1361)];
    let lines = write_tile_list(
        &path,
        metatiles,
        ListGranularity::Metatiles,
        ListMode::Replace,
    )
    .unwrap();
    assert_eq!(lines, 2);
    assert_eq!(fs::read_to_string(&path).unwrap(), "1/0/0\n12/2048/1360\n");
    // Tiles: 4 at z1, 64 at z12, x-major.
    let lines =
        write_tile_list(&path, metatiles, ListGranularity::Tiles, ListMode::Replace).unwrap();
    assert_eq!(lines, 68);
    let text = fs::read_to_string(&path).unwrap();
    let parsed: Vec<Tile> = text.lines().map(|line| line.parse().unwrap()).collect();
    assert_eq!(parsed.len(), 68);
    assert_eq!(&text[..24], "1/0/0\n1/0/1\n1/1/0\n1/1/1\n");
    assert!(parsed[4..].iter().all(|t| t.metatile() == metatiles[1]));
    // Append.
    write_tile_list(
        &path,
        [meta(5, 0, 0)],
        ListGranularity::Metatiles,
        ListMode::Append,
    )
    .unwrap();
    assert!(fs::read_to_string(&path)
        .unwrap()
        .ends_with("12/2055/1367\n5/0/0\n"));
    let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary files left");
    // Errors name the path.
    let e = write_tile_list(
        &dir.path().join("no/such/dir/list"),
        metatiles,
        ListGranularity::Metatiles,
        ListMode::Replace,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no/such/dir/list"), "{e}");
}
