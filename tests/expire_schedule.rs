//! Scheduled low-zoom refreshes: a refresh touches the cached low-zoom
//! metatiles (z0–z2 included, which edits never expire) and nothing above
//! the range (or, with tilepipe's own renderer, touches and queues them in
//! the background); the cron scheduler fires it; bad schedules are refused.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tilepipe::config::Config;
use tilepipe::daemon::expire_to_render::BuiltinRenderer;
use tilepipe::expire::batch::{ExpireConfig, StyleExpiry};
use tilepipe::expire::schedule::{refresh, start, LowZoomSchedule, ScheduledAction};
use tilepipe::metatile::{TileState, TileStore};
use tilepipe::render::queue::{Priority, RenderQueue};
use tilepipe::tile::Metatile;

fn style(dir: &std::path::Path, cron: &str) -> StyleExpiry {
    StyleExpiry {
        name: "default".into(),
        tile_dir: dir.to_path_buf(),
        min_zoom: 10,
        max_zoom: 18,
        touch_from: None,
        delete_from: None,
        renderd: None,
        render_missing: false,
        xml: None,
        low_zooms: Some(LowZoomSchedule {
            cron: cron.into(),
            min_zoom: 0,
            max_zoom: 2,
            action: ScheduledAction::Touch,
        }),
    }
}

fn cache(dir: &std::path::Path) -> (TileStore, Vec<Metatile>) {
    let store = TileStore::new(dir);
    let metatiles = vec![
        Metatile { z: 0, x: 0, y: 0 },
        Metatile { z: 1, x: 0, y: 0 },
        Metatile { z: 2, x: 0, y: 0 },
        Metatile { z: 5, x: 8, y: 8 },
    ];
    for m in &metatiles {
        store
            .write("default", *m, &vec![b"png".to_vec(); 64])
            .unwrap();
    }
    (store, metatiles)
}

fn touched(store: &TileStore, m: Metatile) -> bool {
    matches!(
        store.stat("default", m).unwrap(),
        TileState::Dirty { touched: true, .. }
    )
}

#[tokio::test]
async fn refresh_touches_the_low_zooms_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = cache(dir.path());
    let style = style(dir.path(), "0 0 3 * * *");
    let settings = ExpireConfig::default();
    let summary = refresh(&settings, &style, style.low_zooms.as_ref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(summary.total().touched, 3);
    for m in &metatiles[..3] {
        assert!(touched(&store, *m), "{m}");
    }
    assert!(!touched(&store, metatiles[3]));
}

#[tokio::test]
async fn refresh_with_the_builtin_renderer_marks_dirty_and_queues_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = cache(dir.path());
    let mut style = style(dir.path(), "0 0 3 * * *");
    style.low_zooms.as_mut().unwrap().action = ScheduledAction::Render;
    let queue = Arc::new(RenderQueue::new(100));
    let builtin = BuiltinRenderer {
        queue: queue.clone(),
        styles: ["default".to_string()].into(),
    };
    let settings = ExpireConfig::default();
    let summary = refresh(
        &settings,
        &style,
        style.low_zooms.as_ref().unwrap(),
        Some(&builtin),
    )
    .await
    .unwrap();
    let total = summary.total();
    assert_eq!((total.rendered, total.replies.done), (3, 3));
    for m in &metatiles[..3] {
        assert!(touched(&store, *m), "{m}");
    }
    assert!(!touched(&store, metatiles[3]));
    let stats = queue.stats();
    assert_eq!(stats.queued.get(&Priority::Background), Some(&3));
    let mut queued: Vec<Metatile> = std::iter::from_fn(|| queue.try_take())
        .map(|job| {
            assert_eq!(job.priority, Priority::Background);
            job.key.metatile
        })
        .collect();
    queued.sort();
    let mut expected = metatiles[..3].to_vec();
    expected.sort();
    assert_eq!(queued, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metatiles) = cache(dir.path());
    let settings = ExpireConfig {
        styles: vec![style(dir.path(), "* * * * * *")],
        ..ExpireConfig::default()
    };
    let mut scheduler = start(&settings, None).await.unwrap().expect("a job");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !touched(&store, metatiles[0]) {
        assert!(
            Instant::now() < deadline,
            "the scheduled refresh did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scheduler.shutdown().await.unwrap();
    assert!(!touched(&store, metatiles[3]));
}

#[test]
fn bad_schedules_are_refused_with_the_key() {
    let yaml = "expire:\n  styles:\n    - name: default\n      tile_dir: /tmp/x\n      low_zooms:\n        cron: \"every night\"\n        max_zoom: 8\n";
    let err = Config::parse(yaml, std::path::Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("low_zooms.cron") && err.contains("every night"),
        "{err}"
    );
    let yaml = "expire:\n  styles:\n    - name: default\n      tile_dir: /tmp/x\n      low_zooms:\n        cron: \"0 0 3 * * *\"\n        max_zoom: 15\n";
    let err = Config::parse(yaml, std::path::Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 12"), "{err}");
}
