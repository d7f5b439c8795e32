//! The window's meters: the frame-time log (`DATALEAF_FRAME_LOG`), the lanes' steps/s readout, and
//! the thinning of long series for drawing (which must keep every peak and dip). No timing is
//! asserted: the rates and percentiles are computed from given instants and values.

use std::time::{Duration, Instant};

use dataleaf::app::frame_stats::{rate_text, FrameFacts, FrameLog, LaneRate, Percentiles};
use dataleaf::app::{AppOptions, DataleafApp, Frame, Lane, Series, PRESETS};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;

fn frame(index: usize, distance: f32) -> Frame {
    Frame {
        session: 1,
        lane: Lane::Leaf,
        index,
        image: vec![],
        probs: vec![0.5, 0.5],
        argmax: 0,
        eigenvalues: vec![1.0, 0.0],
        rank: 1,
        trace: 1.0,
        distance,
        off_leaf: 0.0,
        last: false,
        reached: false,
        step_ms: 2.0,
    }
}

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<f32> = (1..=200).rev().map(|v| v as f32).collect();
    let p = Percentiles::of(&values).unwrap();
    assert_eq!(
        (p.count, p.p50, p.p90, p.p99, p.max),
        (200, 100.0, 180.0, 198.0, 200.0)
    );
    let one = Percentiles::of(&[7.5]).unwrap();
    assert_eq!((one.p50, one.p99, one.max), (7.5, 7.5, 7.5));
    assert!(Percentiles::of(&[]).is_none());
}

#[test]
fn thinned_series_keep_their_extremes_ends_and_budget() {
    // A slow descent with one spike up, one dip and a NaN, 5000 steps.
    let frames: Vec<Frame> = (0..5000)
        .map(|i| {
            let d = match i {
                1234 => 99.0,
                3210 => -5.0,
                4000 => f32::NAN,
                _ => 10.0 - i as f32 / 1000.0,
            };
            frame(i, d)
        })
        .collect();
    let points = Series::Distance.points(&frames, 400);
    assert!(points.len() <= 402, "{} points for a budget of 400", points.len());
    assert_eq!(points[0], [0.0, 10.0]);
    assert_eq!(points.last().unwrap()[0], 4999.0);
    assert!(points.contains(&[1234.0, 99.0]), "the spike is drawn");
    assert!(points.contains(&[3210.0, -5.0]), "the dip is drawn");
    assert!(points.windows(2).all(|w| w[0][0] < w[1][0]), "in step order");
    // Every value drawn is a real frame's, and the thinned curve spans the same range.
    let finite = |p: &[[f64; 2]]| {
        p.iter()
            .filter(|p| p[1].is_finite())
            .map(|p| p[1])
            .collect::<Vec<_>>()
    };
    let all: Vec<[f64; 2]> = frames
        .iter()
        .map(|f| [f.index as f64, f.distance as f64])
        .collect();
    let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
    let min = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!(max(&finite(&points)), max(&finite(&all)));
    assert_eq!(min(&finite(&points)), min(&finite(&all)));
    // A short walk is drawn whole.
    assert_eq!(Series::Distance.points(&frames[..300], 400).len(), 300);
}

#[test]
fn lane_rate_counts_steps_over_time() {
    let t0 = Instant::now();
    let mut rate = LaneRate::default();
    assert_eq!(rate.recent(), None);
    // 25 steps a second for 4 s, each computed in 12 ms (20 ms for the first).
    for i in 0..=100 {
        let ms = if i == 0 { 20.0 } else { 12.0 };
        rate.arrived(t0 + Duration::from_millis(40 * i as u64), i, ms);
    }
    assert!((rate.overall().unwrap() - 25.0).abs() < 1e-3);
    // The recent rate covers the last two seconds only: a slower stretch shows at once.
    for i in 101..=110 {
        rate.arrived(t0 + Duration::from_millis(4000 + 200 * (i as u64 - 100)), i, 12.0);
    }
    let recent = rate.recent().unwrap();
    assert!(recent < 10.0 && recent > 4.0, "recent {recent}");
    assert_eq!(rate.step_ms(), Some(12.0));
    assert!((rate.possible().unwrap() - 1000.0 / 12.0).abs() < 1e-3);
    assert_eq!(rate_text(31.4), "31 steps/s");
    assert_eq!(rate_text(4.25), "4.2 steps/s");
    rate.reset();
    assert_eq!(rate.overall(), None);
}

fn facts(session: u64, playing: bool, finished: bool, ui_ms: f32) -> FrameFacts {
    FrameFacts {
        session,
        playing,
        finished,
        ui_ms,
        previous_work_ms: Some(ui_ms + 1.0),
        size: [1280.0, 720.0],
        model: "mnist-medium-cnn".into(),
        steps: [539, 1000],
        steps_per_second: [Some(30.0), Some(30.5)],
    }
}

#[test]
fn frame_log_writes_one_summary_per_walk() {
    let dir = std::env::temp_dir().join(format!("dataleaf-frame-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frames.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut log = FrameLog::new(path.clone());
    // Idle frames before the walk are not recorded.
    assert!(log.frame(&facts(1, false, false, 50.0)).is_none());
    for ms in 1..=99 {
        assert!(log.frame(&facts(1, true, false, ms as f32)).is_none());
    }
    let line = log.frame(&facts(1, false, true, 100.0)).unwrap().unwrap();
    // Frames after the end, and the same finished walk again, add nothing.
    assert!(log.frame(&facts(1, false, true, 500.0)).is_none());
    assert!(log.frame(&facts(1, true, true, 500.0)).is_none());
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.lines().collect::<Vec<_>>(), vec![line.as_str()]);
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["ui_ms"]["count"], 100);
    assert_eq!(json["ui_ms"]["p50"], 50.0);
    assert_eq!(json["ui_ms"]["p99"], 99.0);
    assert_eq!(json["ui_ms"]["max"], 100.0);
    // eframe's figure arrives a frame late: 99 of them, the first walk frame's own arrives next.
    assert_eq!(json["frame_work_ms"]["count"], 99);
    assert_eq!(json["frame_work_ms"]["max"], 101.0);
    assert_eq!(json["window"], serde_json::json!([1280.0, 720.0]));
    assert_eq!(json["leaf_steps"], 539);
    assert_eq!(json["kernel_steps_per_second"], 30.5);
    for key in ["thread_cpu_ms", "interval_ms"] {
        assert!(json[key]["p99"].is_number(), "{key} in {line}");
    }
    // A second walk is a second line.
    log.frame(&facts(2, true, false, 3.0));
    log.frame(&facts(2, true, true, 3.0)).unwrap().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    // An unwritable file is an error, not a panic.
    let mut bad = FrameLog::new(dir.join("no such folder").join("frames.jsonl"));
    bad.frame(&facts(3, true, false, 1.0));
    let err = bad.frame(&facts(3, true, true, 1.0)).unwrap().unwrap_err();
    assert!(err.contains("cannot write the frame log"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node's text: a widget's label, or a plain label's value.
fn text(node: &egui_kittest::Node<'_>) -> Option<String> {
    let n = node.accesskit_node();
    n.label().or_else(|| n.value())
}

#[test]
fn lanes_show_their_steps_per_second_while_walking() {
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    preset: Some(0),
                    ..AppOptions::default()
                },
            )
        });
    assert_eq!(PRESETS[0].start, 4185);
    let began = Instant::now();
    // Until both lanes have a rate (a few frames in) and the walk is still going.
    loop {
        h.step();
        let app = h.state();
        if app.is_playing() && Lane::BOTH.iter().all(|&l| app.lane_rate(l).recent().is_some()) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "no rates; errors {:?}",
            app.errors()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    h.run_steps(2);
    let readouts: Vec<String> = h
        .query_all_by_label_contains("walking… ")
        .filter_map(|n| text(&n))
        .collect();
    assert_eq!(readouts.len(), 2, "one readout per lane: {readouts:?}");
    assert!(readouts.iter().all(|r| r.ends_with(" steps/s")), "{readouts:?}");
    let status = h
        .query_all_by_label_contains("leaf ")
        .filter_map(|n| text(&n))
        .find(|l| l.contains("steps/s") && l.contains("kernel "));
    assert!(status.is_some(), "the status bar names both lanes' rates");
    let app = h.state();
    for lane in Lane::BOTH {
        let r = app.lane_rate(lane);
        assert!(r.step_ms().is_some_and(|ms| ms > 0.0), "{lane:?} has step times");
        assert!(r.recent().is_some_and(|v| v > 0.0 && v.is_finite()));
    }
}
