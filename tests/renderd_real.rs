//! Against the real renderd (Debian's 0.6.1 with Mapnik): tilepipe's
//! protocol client and renderd sink make renderd write metatiles that
//! tilepipe's store reads back as 256×256 PNGs; replies as renderd sends
//! them; touch and delete next to mod_tile's own `render_expired`; and
//! `tilepipe render-expired` end to end.
//!
//! Each test starts its own `renderd -f` on a temporary directory with a
//! one-colour Mapnik style that needs no database, and kills it at the end.
//! Without `renderd` on PATH the tests pass after saying they were skipped
//! (`apt-get install renderd`, or `scripts/install-deps`).

use std::time::Duration;
use tilepipe::expire::actions::{expire, ExpirePolicy, RenderdSink, RenderdSinkOptions};
use tilepipe::metatile::{self, MetatileHeader, TileState, TileStore, TouchOutcome};
use tilepipe::renderd::{Client, Command, Endpoint, ProtocolVersion, RenderdError, Request};
use tilepipe::tile::{Metatile, Tile};
use tilepipe_testkit::renderd::{find_in_path, output_with_stdin, Renderd};

const STYLE: &str = "plain";

/// A Web Mercator map with a background colour and no layers.
const MAPNIK_XML: &str = r##"<?xml version="1.0" encoding="utf-8"?>
<Map background-color="#f2efe9" srs="+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null +wktext +no_defs"/>
"##;

enum Listen {
    Unix,
    Tcp,
}

/// Starts renderd with the one-colour style on a temporary directory
/// (two threads; a Unix socket there, or a free port on 127.0.0.1), or
/// returns `None` (after saying so) when it is not installed.
fn start(listen: Listen) -> Option<Renderd> {
    let mut builder = Renderd::builder()
        .inline_style(STYLE, MAPNIK_XML)
        .num_threads(2)
        .plugins_dir(mapnik_sys::DEFAULT_PLUGIN_DIR);
    if let Listen::Tcp = listen {
        builder = builder.tcp("127.0.0.1", 0);
    }
    builder.start_or_skip()
}

fn tile_store(renderd: &Renderd) -> TileStore {
    TileStore::new(renderd.tile_dir())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn meta(z: u8, x: u32, y: u32) -> Metatile {
    Tile::new(z, x, y).unwrap().metatile()
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[8..16], b"\0\0\0\x0dIHDR", "IHDR first");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Every tile the metatile draws reads back as a 256×256 PNG; slots
/// outside the world are empty.
fn assert_rendered(store: &TileStore, metatile: Metatile) {
    let header = store
        .read_header(STYLE, metatile)
        .unwrap()
        .unwrap_or_else(|| panic!("{metatile} not written"));
    assert!(!header.gzip);
    assert_eq!(
        (header.x, header.y, header.z),
        (metatile.x as i32, metatile.y as i32, i32::from(metatile.z))
    );
    let drawn: Vec<Tile> = metatile.tiles().collect();
    for slot in 0..metatile::SLOTS {
        let tile = metatile::slot_tile(metatile, slot);
        match store.read_tile(STYLE, tile).unwrap() {
            Some(stored) => {
                assert!(drawn.contains(&tile), "{tile} outside the world stored");
                assert_eq!(png_size(&stored.bytes), (256, 256), "{tile}");
            }
            None => assert!(!drawn.contains(&tile), "{tile} missing"),
        }
    }
}

#[test]
fn bulk_renders_over_unix_socket_and_tcp_are_read_back() {
    let Some(unix) = start(Listen::Unix) else {
        return;
    };
    let Some(tcp) = start(Listen::Tcp) else {
        return;
    };
    let runtime = runtime();
    let metatiles = [
        meta(3, 4, 2),
        meta(9, 297, 191),
        meta(18, 131010, 87170),
        meta(18, 16125, 115188),
    ];
    for renderd in [&unix, &tcp] {
        let store = tile_store(renderd);
        let mut policy = ExpirePolicy::new(STYLE);
        policy.render_missing = true;
        let summary = runtime
            .block_on(async {
                let options = RenderdSinkOptions {
                    concurrency: 2,
                    reply_timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                };
                let mut sink = RenderdSink::new(renderd.endpoint(), store.clone(), options);
                expire(&store, &policy, metatiles, &mut sink).await
            })
            .unwrap();
        let total = summary.total();
        assert_eq!(
            (total.rendered, total.replies.done),
            (4, 4),
            "{summary}\n{}",
            renderd.log()
        );
        for metatile in metatiles {
            assert_rendered(&store, metatile);
        }
        // renderd wrote them where tilepipe's hashing puts them.
        for (metatile, path) in metatiles.iter().zip([
            "plain/3/0/0/0/0/0.meta",
            "plain/9/0/0/16/43/136.meta",
            "plain/18/17/245/244/200/0.meta",
            "plain/18/1/60/225/255/128.meta",
        ]) {
            let expected = renderd.tile_dir().join(path);
            assert_eq!(store.path(STYLE, *metatile, None).unwrap(), expected);
            assert!(expected.is_file(), "{}", expected.display());
        }
        // Freshly rendered: clean. Touched: dirty.
        let m = metatiles[2];
        assert!(matches!(store.stat(STYLE, m).unwrap(), TileState::Clean(_)));
        assert_eq!(store.touch(STYLE, m).unwrap(), TouchOutcome::Touched);
        assert!(matches!(
            store.stat(STYLE, m).unwrap(),
            TileState::Dirty { touched: true, .. }
        ));
    }
}

#[test]
fn replies_as_renderd_sends_them() {
    let Some(renderd) = start(Listen::Tcp) else {
        return;
    };
    let runtime = runtime();
    let store = tile_store(&renderd);
    runtime.block_on(async {
        let mut client = Client::connect(renderd.endpoint())
            .await
            .unwrap()
            .with_reply_timeout(Some(Duration::from_secs(60)));
        // z1: a 2×2 world; a tile other than the origin. The reply echoes
        // the tile asked for (the client matches on it).
        let tile = Tile::new(1, 1, 1).unwrap();
        let request = Request::new(Command::RenderPrio, tile, STYLE);
        assert_eq!(client.request(&request).await.unwrap(), Command::Done);
        assert_rendered(&store, tile.metatile());
        let header: MetatileHeader = store.read_header(STYLE, tile.metatile()).unwrap().unwrap();
        let sizes: Vec<u32> = header.index.iter().map(|&(_, size)| size).collect();
        assert_eq!(
            sizes.iter().filter(|&&size| size > 0).count(),
            4,
            "{sizes:?}"
        );

        // v3 and v1 (v1 means style "default", which this renderd lacks).
        let v3 = Request::new(Command::Render, Tile::new(5, 9, 9).unwrap(), STYLE)
            .with_v3_fields("image/png", "");
        assert_eq!(client.request(&v3).await.unwrap(), Command::Done);
        assert_rendered(&store, meta(5, 9, 9));

        // cmdDirty: queued, answered cmdNotDone at once.
        let dirty = Request::new(Command::Dirty, Tile::new(6, 1, 1).unwrap(), STYLE);
        assert_eq!(client.request(&dirty).await.unwrap(), Command::NotDone);

        // Outside the world at z5: cmdIgnore.
        let outside = Request {
            x: 100,
            ..Request::new(Command::RenderBulk, Tile::new(5, 9, 9).unwrap(), STYLE)
        };
        assert_eq!(client.request(&outside).await.unwrap(), Command::Ignore);

        // An unknown style is never answered.
        let mut impatient =
            Client::new(renderd.endpoint()).with_reply_timeout(Some(Duration::from_secs(2)));
        let unknown = Request::new(Command::Render, Tile::new(3, 0, 0).unwrap(), "nosuch");
        let e = impatient.request(&unknown).await.unwrap_err();
        assert!(matches!(e, RenderdError::Timeout { .. }), "{e}");
        let v1 = Request {
            version: ProtocolVersion::V1,
            style: "default".into(),
            ..unknown
        };
        let e = impatient.request(&v1).await.unwrap_err();
        assert!(matches!(e, RenderdError::Timeout { .. }), "{e}");

        // The connection used above still works.
        let again = Request::new(Command::RenderLow, Tile::new(4, 3, 3).unwrap(), STYLE);
        assert_eq!(client.request(&again).await.unwrap(), Command::Done);
    });
}

fn render_expired(renderd: &Renderd, input: &str, args: &[&str]) -> String {
    let program = find_in_path("render_expired").expect("render_expired comes with renderd");
    let out = output_with_stdin(
        std::process::Command::new(program)
            .args(["-m", STYLE, "-t"])
            .arg(renderd.tile_dir())
            .args(args)
            .env("TZ", "UTC"),
        input,
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// mod_tile's `render_expired` and tilepipe agree on paths; its touch moves
/// the mtime 20 years back each time (the 2026 defect), tilepipe's sets
/// one marker.
#[test]
fn touch_and_delete_next_to_mod_tiles_render_expired() {
    let Some(renderd) = start(Listen::Unix) else {
        return;
    };
    let Endpoint::Unix(socket) = renderd.endpoint() else {
        unreachable!()
    };
    let store = tile_store(&renderd);
    let m = meta(15, 16376, 10896);

    // render_expired renders a metatile that is on disk only; seed one with
    // tilepipe's writer, let renderd replace it through render_expired.
    store.write(STYLE, m, &[b"placeholder".to_vec()]).unwrap();
    let socket = socket.to_str().unwrap();
    let out = render_expired(
        &renderd,
        "15/16376/10896\n",
        &["-s", socket, "-z", "15", "-Z", "15"],
    );
    assert!(out.contains("render:"), "{out}");
    assert_rendered(&store, m);

    // render_expired's touch: 20 years back from a post-2005 mtime.
    let before = store.stat(STYLE, m).unwrap().file().unwrap().mtime;
    render_expired(
        &renderd,
        "15/16376/10896\n",
        &["-z", "15", "-Z", "15", "-T", "15"],
    );
    let after = store.stat(STYLE, m).unwrap();
    let TileState::Dirty { stat, touched } = after else {
        panic!("{after:?}")
    };
    let moved = before.duration_since(stat.mtime).unwrap().as_secs();
    let twenty_years = 20 * 365 * 24 * 3600;
    assert!(
        (twenty_years..twenty_years + 7 * 24 * 3600).contains(&moved),
        "moved back {moved} s"
    );
    // Touched in 2026 or later, it is still after 2000: not in tilepipe's
    // "touched" range, so tilepipe's touch still sets its marker.
    if stat.mtime > metatile::touched_before() {
        assert!(!touched);
        assert_eq!(store.touch(STYLE, m).unwrap(), TouchOutcome::Touched);
    }
    assert_eq!(
        store.stat(STYLE, m).unwrap().file().unwrap().mtime,
        metatile::touched_mtime()
    );
    // render_expired leaves a pre-2005 mtime alone, tilepipe too.
    render_expired(
        &renderd,
        "15/16376/10896\n",
        &["-z", "15", "-Z", "15", "-T", "15"],
    );
    assert_eq!(
        store.stat(STYLE, m).unwrap().file().unwrap().mtime,
        metatile::touched_mtime()
    );
    assert_eq!(store.touch(STYLE, m).unwrap(), TouchOutcome::AlreadyTouched);

    // render_expired deletes the file at tilepipe's path.
    let path = store.path(STYLE, m, None).unwrap();
    assert!(path.is_file());
    let out = render_expired(
        &renderd,
        "15/16376/10896\n",
        &["-z", "15", "-Z", "15", "-d", "15"],
    );
    assert!(out.contains("Total meta tiles deleted: 1"), "{out}");
    assert!(!path.exists());
    assert_eq!(store.stat(STYLE, m).unwrap(), TileState::Missing);
}

#[test]
fn render_expired_command_end_to_end() {
    let Some(renderd) = start(Listen::Tcp) else {
        return;
    };
    let Endpoint::Tcp { port, .. } = renderd.endpoint() else {
        unreachable!()
    };
    let store = tile_store(&renderd);
    // On disk: z12 and z14 metatiles of the area; z13 missing.
    let tile = Tile::new(14, 8190, 5448).unwrap();
    for z in [12, 14] {
        store
            .write(STYLE, tile.ancestor(14 - z).metatile(), &[b"old".to_vec()])
            .unwrap();
    }
    // z16 is deleted (and z15 would be touched, but is missing).
    let z16 = meta(16, 8190 * 4, 5448 * 4);
    store.write(STYLE, z16, &[b"old".to_vec()]).unwrap();
    let list = renderd.dir().join("expired.list");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tilepipe"));
    command
        .env_remove("TILEPIPE_CONFIG")
        .args([
            "render-expired",
            "--map",
            STYLE,
            "--min-zoom",
            "12",
            "--max-zoom",
            "16",
        ])
        .args([
            "--touch-from",
            "15",
            "--delete-from",
            "16",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "-n",
            "2",
            "--timeout",
            "60",
            "--tile-dir",
        ])
        .arg(renderd.tile_dir())
        .arg("--list")
        .arg(&list);
    let out = output_with_stdin(&mut command, "14/8190/5448\nnonsense\n").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        renderd.log()
    );
    assert!(
        stdout.contains("Tiles read from input: 1 (1 lines skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Meta tiles rendered: 2 (done 2, not done 0, ignored 0, failed 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("Meta tiles deleted: 1"), "{stdout}");
    assert!(
        stdout.contains("Meta tiles ignored (not on disk): 2"),
        "z13, z15: {stdout}"
    );
    // The placeholders were replaced by renderd's PNGs.
    for z in [12, 14] {
        assert_rendered(&store, tile.ancestor(14 - z).metatile());
    }
    assert_eq!(store.stat(STYLE, z16).unwrap(), TileState::Missing);
    // The list holds the metatiles covering the tile at z12-z16: one per
    // zoom (from z18 there would be more).
    let listed = std::fs::read_to_string(&list).unwrap();
    assert_eq!(listed.lines().count(), 5, "{listed}");
}
