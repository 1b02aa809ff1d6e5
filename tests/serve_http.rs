//! The tile server over real HTTP on loopback, with the real Mapnik
//! renderer behind it (a one-colour style that needs no database): every
//! tile state (clean, dirty, missing, out of range, malformed), the 304
//! paths, throttling, admin networks, CORS, TileJSON, the page, metrics
//! and health.

use reqwest::header;
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};
use tilepipe::metatile::{self, TileState};
use tilepipe::metrics::TileOutcome;
use tilepipe::tile::Tile;
use tilepipe_testkit::http::get_within;
use tilepipe_testkit::serve::{
    client, planet_import_complete, png_size, status, Options, TestServer, STYLE,
};

/// Writes a metatile whose slot for `tile` holds `bytes` (other slots empty).
fn write_tile(server: &TestServer, tile: Tile, bytes: &[u8]) {
    let mut tiles = vec![Vec::new(); metatile::SLOTS];
    tiles[metatile::slot(tile)] = bytes.to_vec();
    server
        .store()
        .write(STYLE, tile.metatile(), &tiles)
        .unwrap();
}

fn max_age(response: &reqwest::Response) -> u64 {
    let value = response.headers()[header::CACHE_CONTROL].to_str().unwrap();
    value.strip_prefix("max-age=").unwrap().parse().unwrap()
}

/// A response's body parsed as JSON.
async fn json_body(response: reqwest::Response) -> serde_json::Value {
    response.text().await.unwrap().parse().unwrap()
}

fn tile_path(tile: Tile) -> String {
    format!("/{STYLE}/{}/{}/{}.png", tile.z, tile.x, tile.y)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_tile_with_cache_headers_and_304s() {
    let server = TestServer::without_renderer().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(12, 2140, 1393).unwrap();
    write_tile(&server, tile, b"not really a png");
    let http = client();
    let url = server.url(&tile_path(tile));

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
    // mod_tile's defaults: z12 gets the 3-hour minimum plus up to 3 hours.
    let age = max_age(&r);
    assert!((10_800..21_600).contains(&age), "{age}");
    assert!(r.headers().contains_key(header::EXPIRES));
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
    let modified = r.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.bytes().await.unwrap(), &b"not really a png"[..]);

    // If-None-Match → 304 with the validators and cache headers again.
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], etag.as_str());
    assert!(r.headers().contains_key(header::CACHE_CONTROL));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // If-Modified-Since: the Last-Modified date → 304, an older one → 200.
    let r = http
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let before = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(7200));
    let r = http
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, before)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"other\"")
        .header(header::IF_MODIFIED_SINCE, &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // HEAD: headers, no body.
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "16");
    assert!(r.bytes().await.unwrap().is_empty());

    // A re-render drawing the same bytes keeps the ETag (content-based).
    std::thread::sleep(Duration::from_millis(20));
    write_tile(&server, tile, b"not really a png");
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Low zooms: 6 days plus up to 3 hours.
    let world = Tile::new(0, 0, 0).unwrap();
    write_tile(&server, world, b"z0");
    let r = http
        .get(server.url(&tile_path(world)))
        .send()
        .await
        .unwrap();
    assert!((518_400..529_200).contains(&max_age(&r)));

    let counters = server.metrics.style(STYLE);
    assert_eq!(counters.get(12, TileOutcome::NotModified), 3);
    assert!(counters.get(12, TileOutcome::Fresh) >= 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_tile_is_rerendered_and_status_tells_the_truth() {
    let server = TestServer::new().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(10, 535, 348).unwrap();
    write_tile(&server, tile, b"old image");
    let http = client();
    let status = |http: &reqwest::Client| {
        let url = server.url(&format!("{}/status", tile_path(tile)));
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert!(
        status(&http).await.starts_with("Tile is clean."),
        "{}",
        status(&http).await
    );

    // /dirty marks it dirty on disk (mod_tile's /status would still say
    // "clean" for a touched tile) and queues a re-render.
    let r = http
        .get(server.url(&format!("{}/dirty", tile_path(tile))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "Tile submitted for rendering\n");

    // The re-render may already be done; if not, /status says it is due.
    let state = server.store().stat(STYLE, tile.metatile()).unwrap();
    let text = status(&http).await;
    match state {
        TileState::Dirty { touched: true, .. } => {
            assert!(
                text.starts_with("Tile is due to be rendered (marked dirty"),
                "{text}"
            )
        }
        TileState::Clean(_) => assert!(text.starts_with("Tile is clean."), "{text}"),
        other => panic!("{other:?}"),
    }

    // A request within the timeout gets the new image.
    let r = http.get(server.url(&tile_path(tile))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    assert_eq!(png_size(&bytes), (256, 256));
    assert!(status(&http).await.starts_with("Tile is clean."));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_tile_is_served_stale_when_the_render_is_late() {
    // A zero timeout: the re-render cannot be waited for.
    let server = TestServer::start(Options::default(), |s| s.request_timeout_secs = 0.0).await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(11, 1070, 697).unwrap();
    write_tile(&server, tile, b"stale image");
    server.store().touch(STYLE, tile.metatile()).unwrap();
    let http = client();
    let r = http.get(server.url(&tile_path(tile))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Dirty: 15 minutes plus up to half of it; no Last-Modified, since a
    // touched metatile's mtime is only a marker.
    let age = max_age(&r);
    assert!((900..1350).contains(&age), "{age}");
    assert!(!r.headers().contains_key(header::LAST_MODIFIED));
    assert_eq!(r.bytes().await.unwrap(), &b"stale image"[..]);
    assert_eq!(server.metrics.style(STYLE).get(11, TileOutcome::Stale), 1);
    // The re-render was queued and lands.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !matches!(
        server.store().stat(STYLE, tile.metatile()).unwrap(),
        TileState::Clean(_)
    ) {
        assert!(std::time::Instant::now() < deadline, "never re-rendered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http.get(server.url(&tile_path(tile))).send().await.unwrap();
    assert_eq!(png_size(&r.bytes().await.unwrap()), (256, 256));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_tile_without_renderer_is_stale() {
    let server = TestServer::without_renderer().await;
    planet_import_complete(&server.tiles, Duration::from_secs(60));
    let tile = Tile::new(9, 267, 174).unwrap();
    write_tile(&server, tile, b"old");
    // Older than the planet time by age, not by touch: Last-Modified stays.
    let path = server.store().path(STYLE, tile.metatile(), None).unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(old))
        .unwrap();
    let r = client()
        .get(server.url(&tile_path(tile)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key(header::LAST_MODIFIED));
    assert!((900..1350).contains(&max_age(&r)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tile_is_rendered_within_the_timeout() {
    let server = TestServer::new().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(14, 8700, 5600).unwrap();
    assert_eq!(
        server.store().stat(STYLE, tile.metatile()).unwrap(),
        TileState::Missing
    );
    let r = client()
        .get(server.url(&tile_path(tile)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(png_size(&r.bytes().await.unwrap()), (256, 256));
    assert!(matches!(
        server.store().stat(STYLE, tile.metatile()).unwrap(),
        TileState::Clean(_)
    ));
    assert_eq!(
        server.metrics.style(STYLE).get(14, TileOutcome::Rendered),
        1
    );
    // Its neighbours came with the metatile.
    let neighbour = Tile::new(14, 8701, 5601).unwrap();
    let r = client()
        .get(server.url(&tile_path(neighbour)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(server.metrics.style(STYLE).get(14, TileOutcome::Fresh), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tile_is_404_after_the_timeout_and_rendered_later() {
    let server =
        TestServer::start(Options::default(), |s| s.missing_request_timeout_secs = 0.0).await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(13, 4350, 2800).unwrap();
    let r = client()
        .get(server.url(&tile_path(tile)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        server
            .metrics
            .style(STYLE)
            .get(13, TileOutcome::NotRendered),
        1
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server
        .store()
        .stat(STYLE, tile.metatile())
        .unwrap()
        .exists()
    {
        assert!(std::time::Instant::now() < deadline, "never rendered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client()
        .get(server.url(&tile_path(tile)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_malformed_and_unknown() {
    let server = TestServer::without_renderer().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let http = client();
    let get = |path: &str| {
        let url = server.url(path);
        let http = http.clone();
        async move { status(&http, url).await }
    };
    let started = std::time::Instant::now();
    for path in [
        "/plain/19/0/0.png", // above the style's max zoom (18)
        "/plain/25/0/0.png", // above any zoom
        "/plain/2/4/0.png",  // x outside the world
        "/plain/2/0/4.png",  // y outside the world
        "/plain/3/0/99999999999999999999.png",
        "/plain/1/0/0.jpg", // not this style's extension
        "/nosuchstyle/1/0/0.png",
        "/nosuchstyle",
    ] {
        assert_eq!(get(path).await, StatusCode::NOT_FOUND, "{path}");
    }
    // mod_tile sleeps 3 s before such a 404; tilepipe answers at once.
    assert!(started.elapsed() < Duration::from_secs(2));
    for path in [
        "/plain/a/0/0.png",
        "/plain/1/0/0",
        "/plain/1/-1/0.png",
        "/plain/1/0/0.png/other",
        "/plain/1/0/0.png/status/x",
        "/plain/1/0",
    ] {
        assert_eq!(get(path).await, StatusCode::BAD_REQUEST, "{path}");
    }
    // An empty slot of an existing metatile.
    let tile = Tile::new(5, 16, 10).unwrap();
    write_tile(&server, tile, b"one");
    assert_eq!(get(&tile_path(tile)).await, StatusCode::OK);
    assert_eq!(
        get(&tile_path(Tile::new(5, 17, 10).unwrap())).await,
        StatusCode::NOT_FOUND
    );
    // No renderer: a missing tile is 404 at once.
    assert_eq!(get("/plain/6/1/1.png").await, StatusCode::NOT_FOUND);
    let r = http
        .post(server.url("/plain/1/0/0.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let counters = server.metrics.style(STYLE);
    assert_eq!(counters.total(TileOutcome::OutOfRange), 6);
    assert_eq!(counters.get(5, TileOutcome::Empty), 1);
    assert_eq!(server.metrics.status_count(400), 6);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_clients_get_429() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.throttle.enabled = true;
        s.throttle.tiles.size = 3;
        s.throttle.tiles.rate = 0.01;
        s.throttle.x_forwarded_for = tilepipe::serve::config::ForwardedFor::Last;
    })
    .await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(8, 130, 90).unwrap();
    write_tile(&server, tile, b"t");
    let http = client();
    let url = server.url(&tile_path(tile));
    for _ in 0..3 {
        assert_eq!(status(&http, &url).await, StatusCode::OK);
    }
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((90..=101).contains(&retry), "{retry}");
    // Behind a proxy: the last X-Forwarded-For entry is the client.
    let r = http
        .get(&url)
        .header("X-Forwarded-For", "203.0.113.9, 198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Over all header lines: the last entry of the last line.
    let r = http
        .get(&url)
        .header("X-Forwarded-For", "198.51.100.7")
        .header("X-Forwarded-For", "192.0.2.44")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let from_44 = |http: &reqwest::Client| {
        http.get(&url)
            .header("X-Forwarded-For", "192.0.2.44")
            .send()
    };
    for _ in 0..2 {
        assert_eq!(from_44(&http).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        from_44(&http).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the two-line request counted against 192.0.2.44"
    );
    assert_eq!(
        server.metrics.style(STYLE).get(8, TileOutcome::Throttled),
        2
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_denied_outside_the_admin_networks() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.admin_networks = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    })
    .await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(8, 130, 90).unwrap();
    write_tile(&server, tile, b"t");
    let http = client();
    for path in [
        format!("{}/dirty", tile_path(tile)),
        format!("{}/status", tile_path(tile)),
        "/metrics".to_string(),
    ] {
        let r = http.get(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Nothing was touched; tiles and health stay open.
    assert!(matches!(
        server.store().stat(STYLE, tile.metatile()).unwrap(),
        TileState::Clean(_)
    ));
    assert_eq!(
        status(&http, server.url(&tile_path(tile))).await,
        StatusCode::OK
    );
    assert_eq!(status(&http, server.url("/health")).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_policy() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.cors_origins = vec!["https://map.example".into()];
    })
    .await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(8, 130, 90).unwrap();
    write_tile(&server, tile, b"t");
    let http = client();
    let url = server.url(&tile_path(tile));
    let r = http
        .get(&url)
        .header(header::ORIGIN, "https://map.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://map.example"
    );
    assert_eq!(r.headers()[header::VARY], "Origin");
    let r = http
        .get(&url)
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!r
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let r = http.get(&url).send().await.unwrap();
    assert!(!r
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let r = http
        .request(reqwest::Method::OPTIONS, &url)
        .header(header::ORIGIN, "https://map.example")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-custom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "x-custom"
    );
    assert_eq!(r.headers()[header::ACCESS_CONTROL_MAX_AGE], "604800");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tilejson_catalogue_and_page() {
    let server = TestServer::without_renderer().await;
    let http = client();
    let r = http
        .get(server.url("/plain/tile.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
    let json: serde_json::Value = json_body(r).await;
    assert_eq!(json["tilejson"], "3.0.0");
    assert_eq!(json["name"], STYLE);
    assert_eq!(json["scheme"], "xyz");
    assert_eq!(json["minzoom"], 0);
    assert_eq!(json["maxzoom"], 18);
    assert_eq!(json["attribution"], "© OpenStreetMap contributors");
    assert_eq!(
        json["tiles"][0],
        format!("{}/plain/{{z}}/{{x}}/{{y}}.png", server.base)
    );
    let r = http
        .get(server.url("/plain/tile.json"))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // mod_tile's name for it.
    let r = http
        .get(server.url("/plain/tile-layer.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let all: serde_json::Value = http
        .get(server.url("/styles.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["name"], STYLE);

    let page = http
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/static/leaflet/leaflet.js"));
    assert!(page.contains("/static/map.js"));
    let js = http.get(server.url("/static/map.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await.unwrap().contains("L.control.layers"));
    let leaflet = http
        .get(server.url("/static/leaflet/leaflet.js"))
        .send()
        .await
        .unwrap();
    if leaflet.status() == StatusCode::NOT_FOUND {
        eprintln!(
            "note: Leaflet is not installed (npm install --prefix web); page assets not checked"
        );
    } else {
        assert_eq!(leaflet.status(), StatusCode::OK);
        assert!(leaflet.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }
    for bad in [
        "/static/leaflet/../../Cargo.toml",
        "/static/leaflet/%2e%2e/x",
    ] {
        let r = http.get(server.url(bad)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let server = TestServer::start(Options::default(), |s| s.max_replication_lag_secs = 60).await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let http = client();
    let tile = Tile::new(7, 66, 44).unwrap();
    assert_eq!(
        status(&http, server.url(&tile_path(tile))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&http, server.url(&tile_path(tile))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&http, server.url("/plain/30/0/0.png")).await,
        StatusCode::NOT_FOUND
    );

    // No replication reported: healthy.
    let r = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = json_body(r).await;
    assert_eq!(body["status"], "ok");
    assert!(body["replication_lag_seconds"].is_null());

    server
        .metrics
        .set_replication_position(4242, SystemTime::now() - Duration::from_secs(10));
    server.metrics.record_batch(SystemTime::now(), 17);
    server.metrics.add_expired(120, 9);
    let r = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "tilepipe_tile_requests_total{style=\"plain\",zoom=\"7\",outcome=\"rendered\"} 1",
        "tilepipe_tile_requests_total{style=\"plain\",zoom=\"7\",outcome=\"fresh\"} 1",
        "tilepipe_tile_requests_total{style=\"plain\",zoom=\"30\",outcome=\"out_of_range\"} 1",
        "tilepipe_render_queue_length{priority=\"missing\"} 0",
        "tilepipe_renders_total{priority=\"missing\",zoom=\"7\",result=\"ok\"} 1",
        "tilepipe_render_seconds_total{priority=\"missing\",zoom=\"7\"}",
        "tilepipe_replication_sequence 4242",
        "tilepipe_batches_applied_total 1",
        "tilepipe_expired_tiles_total 120",
        "tilepipe_last_apply_timestamp_seconds ",
        "tilepipe_tile_response_seconds_count 3",
        "tilepipe_http_responses_total{status=\"404\"} 1",
    ] {
        assert!(text.contains(expected), "{expected} not in\n{text}");
    }
    let lag_line = text
        .lines()
        .find(|l| l.starts_with("tilepipe_replication_lag_seconds "))
        .unwrap();
    let lag: f64 = lag_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((10.0..20.0).contains(&lag), "{lag}");

    // Lag above the bound: unhealthy.
    server
        .metrics
        .set_replication_position(4243, SystemTime::now() - Duration::from_secs(120));
    let r = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = json_body(r).await;
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["replication_sequence"], 4243);
    server.stop().await;
}

/// The status and body of a GET of `path` with these `X-Forwarded-For`
/// header lines.
async fn get_forwarded(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    forwarded: &[&str],
) -> (StatusCode, String) {
    let mut request = http.get(server.url(path));
    for line in forwarded {
        request = request.header("X-Forwarded-For", *line);
    }
    let r = request.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_establish_the_client() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.admin_networks = vec!["10.0.0.0/8".into()];
        s.trusted_proxies = vec!["127.0.0.1".into(), "192.0.2.0/24".into()];
        s.throttle.enabled = true;
        s.throttle.tiles.size = 1;
        s.throttle.tiles.rate = 0.001;
        // Ignored with trusted proxies: the client they establish counts.
        s.throttle.x_forwarded_for = tilepipe::serve::config::ForwardedFor::First;
    })
    .await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    let tile = Tile::new(8, 130, 90).unwrap();
    write_tile(&server, tile, b"t");
    let http = client();
    let metrics = |lines: &'static [&'static str]| get_forwarded(&http, &server, "/metrics", lines);
    // The proxy itself is no admin.
    assert_eq!(metrics(&[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(metrics(&["10.1.2.3"]).await.0, StatusCode::OK);
    // A client claiming an admin address left of its own: not believed.
    assert_eq!(
        metrics(&["10.1.2.3, 203.0.113.5"]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        metrics(&["10.1.2.3", "203.0.113.5"]).await.0,
        StatusCode::FORBIDDEN
    );
    // Trusted hops are skipped from the right.
    assert_eq!(
        metrics(&["203.0.113.5, 10.1.2.3, 192.0.2.7"]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        metrics(&["203.0.113.5", "10.1.2.3:4711"]).await.0,
        StatusCode::OK
    );
    // Garbage ends the walk at the proxy.
    assert_eq!(
        metrics(&["10.1.2.3, nonsense"]).await.0,
        StatusCode::FORBIDDEN
    );
    // Throttling counts the established client, not `first`.
    let path = tile_path(tile);
    let tile_from = |lines: &'static [&'static str]| get_forwarded(&http, &server, &path, lines);
    assert_eq!(tile_from(&["198.51.100.1"]).await.0, StatusCode::OK);
    assert_eq!(
        tile_from(&["198.51.100.1"]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        tile_from(&["198.51.100.1, 198.51.100.2"]).await.0,
        StatusCode::OK
    );
    server.stop().await;

    // From a peer that is not a trusted proxy X-Forwarded-For is ignored.
    let server = TestServer::start(Options::no_render(), |s| {
        s.admin_networks = vec!["10.0.0.0/8".into()];
        s.trusted_proxies = vec!["192.0.2.0/24".into()];
    })
    .await;
    let (status, _) = get_forwarded(&http, &server, "/metrics", &["10.1.2.3"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_tell_paths_to_admins_only() {
    let server = TestServer::start(Options::no_render(), |s| {
        s.admin_networks = vec!["10.0.0.0/8".into()];
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.leaflet_dir = "/nonexistent/leaflet-dist".into();
    })
    .await;
    let http = client();
    let path = "/static/leaflet/leaflet.js";
    let (status, body) = get_forwarded(&http, &server, path, &["203.0.113.5"]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("/nonexistent"), "{body}");
    let (status, body) = get_forwarded(&http, &server, path, &["10.1.2.3"]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("/nonexistent/leaflet-dist"), "{body}");
    server.stop().await;
}

/// Opens `fifo` for writing and closes it again until no reader waits in
/// `open()` on it: each such open lets every waiting reader through.
fn release_fifo_readers(fifo: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            // ENXIO: nobody has it open for reading.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_storage_does_not_stall_other_requests() {
    let server = TestServer::without_renderer().await;
    planet_import_complete(&server.tiles, Duration::from_secs(3600));
    // A FIFO where the metatile should be: open() blocks until a writer
    // comes, like a read from storage that hangs.
    let tile = Tile::new(9, 260, 180).unwrap();
    let fifo = server.store().path(STYLE, tile.metatile(), None).unwrap();
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // More hanging requests than the runtime has worker threads.
    let addr = server.addr;
    let hanging: Vec<_> = (0..4)
        .map(|_| {
            let path = tile_path(tile);
            std::thread::spawn(move || get_within(addr, &path, Duration::from_secs(30)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let health = std::thread::spawn(move || get_within(addr, "/health", Duration::from_secs(2)))
        .join()
        .unwrap();
    let took = started.elapsed();
    // Let the hanging reads go before judging, so that a failure does
    // not leave threads blocked in open().
    release_fifo_readers(&fifo);
    let answers: Vec<_> = hanging.into_iter().map(|t| t.join().unwrap()).collect();
    let (status, _) = health.expect("/health answers while metatile reads hang");
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(2), "{took:?}");
    for answer in answers {
        // A FIFO cannot be read at an offset: a read error, whose body
        // does not tell the path.
        let (status, body) = answer.unwrap();
        assert_eq!(status, 500, "{body}");
        assert!(!body.contains(server.tiles.to_str().unwrap()), "{body}");
    }
    server.stop().await;
}
