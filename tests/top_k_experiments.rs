//! `dataleaf experiment ... --top-k K` (issue 15, Scale): the experiments build G from the K most
//! probable classes, their reports say K and the dropped probability mass (mean and max over every
//! point where G was computed), K >= C is the exact run byte for byte, and shards of different K
//! never merge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataleaf::data::Dataset;
use dataleaf::experiments::{self, dataset_spectra, Progress, Settings};
use dataleaf::geometry::{softmax, top_classes};
use dataleaf::model::{Model, DEFAULT_MODEL};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

fn dataleaf(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("dataleaf runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// The one `error:` line of a failed run.
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should fail; stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataleaf-top-k-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn settings(samples: usize, top_k: Option<usize>) -> Settings {
    Settings {
        samples: Some(samples),
        top_k,
        ..Settings::default()
    }
}

fn medians(report: &Value, set: usize) -> (Vec<f64>, f64) {
    let d = &report["datasets"][set];
    let lambdas = d["median_log10_lambda"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (lambdas, d["median_log10_trace"].as_f64().unwrap())
}

#[test]
fn dataset_spectra_from_the_top_3_classes_reports_k_and_the_dropped_mass() {
    let samples = 12;
    let exact = experiments::run("dataset-spectra", &settings(samples, None), &Progress::new()).unwrap();
    let top3 = experiments::run("dataset-spectra", &settings(samples, Some(3)), &Progress::new()).unwrap();
    assert!(exact.json.get("top_k").is_none() && exact.json.get("dropped_mass").is_none());
    assert_eq!(top3.json["top_k"], 3);

    // The dropped mass, recomputed here from the model's probabilities on the same sets: for
    // each image the sum of p_i over the 7 least probable classes; mean and max over all images.
    let model = Model::open(DEFAULT_MODEL).unwrap();
    let data = Dataset::open("mnist").unwrap();
    let sets = dataset_spectra::comparison_sets(&data, samples, 0).unwrap();
    let mut masses = Vec::new();
    for set in &sets {
        for i in 0..set.len() {
            let probs = softmax(&model.network.logits(set.image(i).unwrap(), 1));
            let kept = top_classes(&probs, 3);
            let dropped: f64 = (0..probs.len())
                .filter(|c| !kept.contains(c))
                .map(|c| probs[c])
                .sum();
            masses.push(dropped);
        }
    }
    let mean = masses.iter().sum::<f64>() / masses.len() as f64;
    let max = masses.iter().copied().fold(0.0, f64::max);
    let reported = &top3.json["dropped_mass"];
    assert_eq!(reported["points"].as_u64().unwrap() as usize, masses.len());
    let (r_mean, r_max) = (
        reported["mean"].as_f64().unwrap(),
        reported["max"].as_f64().unwrap(),
    );
    assert!(
        (r_mean - mean).abs() <= 1e-12 * mean.max(1e-300) + 1e-15,
        "{r_mean} vs {mean}"
    );
    assert!((r_max - max).abs() <= 1e-12 * max + 1e-15, "{r_max} vs {max}");
    // Noise and other datasets are uncertain: top 3 leaves out real mass there.
    assert!(
        max > 0.05 && r_mean > 0.0 && r_mean < max,
        "mean {r_mean}, max {r_max}"
    );

    // G_3 = G minus the dropped classes' terms p_i g_i g_i^T (each PSD), so by Weyl every
    // eigenvalue and the trace can only fall: every set's medians are at most the exact ones,
    // and somewhere they fall.
    let mut fell = false;
    for set in 0..sets.len() {
        let (l_exact, t_exact) = medians(&exact.json, set);
        let (l_top, t_top) = medians(&top3.json, set);
        assert_eq!(l_exact.len(), 10);
        // lambda_1..3 of G_3, then lambda_4 = 0 (rank <= 3), at the log floor.
        assert_eq!(l_top.len(), 4);
        assert_eq!(l_top[3], dataset_spectra::LOG10_FLOOR);
        for k in 0..3 {
            assert!(
                l_top[k] <= l_exact[k] + 1e-3,
                "set {set}, lambda_{}: {} > {}",
                k + 1,
                l_top[k],
                l_exact[k]
            );
            fell |= l_top[k] < l_exact[k] - 0.01;
        }
        assert!(t_top <= t_exact + 1e-3, "set {set}: trace {t_top} > {t_exact}");
        fell |= t_top < t_exact - 0.01;
    }
    assert!(fell, "top 3 of 10 changes the spectra somewhere");
    assert!(top3.summary.ends_with(
        &format!(
            "G from the top 3 of 10 classes: dropped probability mass over the {} points where G was computed: mean {:.3e}, max {:.3e}",
            masses.len(),
            r_mean,
            r_max
        )
    ));
    // The figure grows a caption strip; the exact one does not.
    assert_eq!(top3.plot.width(), exact.plot.width());
    assert_eq!(top3.plot.height(), exact.plot.height() + 26);
    assert!(top3.svg.contains("G from the top 3 of 10 classes"));
    assert!(!exact.svg.contains("G from the top"));
}

#[test]
fn k_at_least_c_is_the_exact_run_byte_for_byte() {
    let exact = experiments::run("ood", &settings(8, None), &Progress::new()).unwrap();
    for k in [10, 50] {
        let all = experiments::run("ood", &settings(8, Some(k)), &Progress::new()).unwrap();
        assert_eq!(all.json.to_string(), exact.json.to_string(), "K = {k}");
        assert_eq!(all.summary, exact.summary);
        assert_eq!(all.svg, exact.svg);
        assert_eq!(all.plot.as_raw(), exact.plot.as_raw());
    }
}

#[test]
fn ood_from_the_top_2_classes_changes_the_g_scores_only() {
    let out = dataleaf(&["experiment", "ood", "--samples", "10", "--top-k", "2", "--json"]);
    let top2: Value = serde_json::from_str(&ok(&out)).unwrap();
    let out = dataleaf(&["experiment", "ood", "--samples", "10", "--json"]);
    let exact: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(top2["top_k"], 2);
    let images: u64 = top2["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(top2["dropped_mass"]["points"].as_u64(), Some(images));
    let (mean, max) = (
        top2["dropped_mass"]["mean"].as_f64().unwrap(),
        top2["dropped_mass"]["max"].as_f64().unwrap(),
    );
    assert!(0.0 < mean && mean <= max && max < 1.0, "mean {mean}, max {max}");
    let mut differs = false;
    for (set, scores) in exact["auc"].as_object().unwrap() {
        // 1 - max p needs no G: the same AUC to the last digit.
        assert_eq!(
            scores["one_minus_max_prob"],
            top2["auc"][set]["one_minus_max_prob"]
        );
        differs |= scores["log10_lambda_1"] != top2["auc"][set]["log10_lambda_1"]
            || scores["log10_trace"] != top2["auc"][set]["log10_trace"];
    }
    assert!(differs, "G's scores change with G from 2 of 10 classes");
}

#[test]
fn shards_of_different_k_never_merge() {
    let dir = scratch("merge");
    let part = |k: usize, n: usize, top_k: Option<&str>| {
        let path = dir.join(format!("part-{k}-of-{n}-k{}.json", top_k.unwrap_or("all")));
        let spec = format!("{k}/{n}");
        let mut args = vec![
            "experiment",
            "dataset-spectra",
            "--samples",
            "6",
            "--shard",
            &spec,
            "--out",
            s(&path),
        ];
        if let Some(t) = top_k {
            args.extend(["--top-k", t]);
        }
        ok(&dataleaf(&args));
        path
    };
    let (a3, b3) = (part(1, 2, Some("3")), part(2, 2, Some("3")));
    let (b_exact, b5, b20) = (part(2, 2, None), part(2, 2, Some("5")), part(2, 2, Some("20")));
    let a_exact = part(1, 2, None);

    let err = refused(&dataleaf(&["experiment", "merge", s(&a3), s(&b_exact)]));
    assert!(
        err.contains(&format!(
            "{} is a part of another run than {} (top_k: the exact G vs G from the top 3 of 10 classes)",
            b_exact.display(),
            a3.display()
        )),
        "{err}"
    );
    let err = refused(&dataleaf(&["experiment", "merge", s(&a3), s(&b5)]));
    assert!(
        err.contains("(top_k: G from the top 5 of 10 classes vs G from the top 3 of 10 classes)"),
        "{err}"
    );

    // The same K merges into exactly the single run with that K.
    let merged = ok(&dataleaf(&["experiment", "merge", s(&b3), s(&a3), "--json"]));
    let single = ok(&dataleaf(&[
        "experiment",
        "dataset-spectra",
        "--samples",
        "6",
        "--top-k",
        "3",
        "--json",
    ]));
    assert_eq!(merged, single);
    assert!(merged.contains("\"top_k\":3"));
    // K = 20 >= C = 10 is the exact G: that shard is a part of the exact run.
    let merged = ok(&dataleaf(&[
        "experiment",
        "merge",
        s(&a_exact),
        s(&b20),
        "--json",
    ]));
    let exact = ok(&dataleaf(&[
        "experiment",
        "dataset-spectra",
        "--samples",
        "6",
        "--json",
    ]));
    assert_eq!(merged, exact);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_flag_is_refused_where_it_does_not_apply() {
    let err = refused(&dataleaf(&[
        "experiment",
        "involutivity",
        "--samples",
        "1",
        "--top-k",
        "3",
    ]));
    assert!(
        err.contains("--top-k 3 does not apply to involutivity: it builds no G"),
        "{err}"
    );
    let err = refused(&dataleaf(&["experiment", "merge", "part.json", "--top-k", "3"]));
    assert!(
        err.contains("each part records the K it was computed with"),
        "{err}"
    );
    let out = dataleaf(&["experiment", "ood", "--top-k", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("K must be at least 1"));
}

#[test]
fn off_leaf_counts_the_dropped_mass_at_every_point_of_its_walks() {
    let exact = experiments::run("off-leaf", &settings(1, None), &Progress::new()).unwrap();
    let top3 = experiments::run("off-leaf", &settings(1, Some(3)), &Progress::new()).unwrap();
    // The kernel walk and the leaf walk each evaluate G at their start and after each of the
    // 8 / 0.0308 = 260 steps; the random direction needs no G.
    let steps = (8.0f32 / dataleaf::walk::DEFAULT_STEP).round() as u64;
    let d = &top3.json["dropped_mass"];
    assert_eq!(d["points"].as_u64(), Some(2 * (steps + 1)));
    let (mean, max) = (d["mean"].as_f64().unwrap(), d["max"].as_f64().unwrap());
    assert!(0.0 < mean && mean <= max && max < 1.0, "mean {mean}, max {max}");
    // The straight random line needs no G: its columns are the exact run's.
    assert_eq!(exact.json["accuracy"]["random"], top3.json["accuracy"]["random"]);
    assert_eq!(
        exact.json["true_class_prob"]["random"],
        top3.json["true_class_prob"]["random"]
    );
    // The kernel walk projects on ker G_3, a larger space than ker G: it moves elsewhere.
    assert_ne!(
        exact.json["true_class_prob"]["kernel"],
        top3.json["true_class_prob"]["kernel"]
    );
}

#[test]
fn a_dropped_mass_of_non_finite_probabilities_passes_through_a_part() {
    use dataleaf::experiments::Dropped;
    // Non-finite logits give NaN probabilities, so a NaN dropped mass: a part carries it as text.
    let mut d = Dropped::of(0.25);
    d.add(f64::NAN);
    let text = serde_json::to_string(&d).unwrap();
    let back: Dropped = serde_json::from_str(&text).unwrap();
    assert!(
        back.sum.is_nan() && back.points == 2 && back.max == 0.25,
        "{text}"
    );
    let merged = Dropped::of(0.5).join(Dropped::of(0.1));
    assert_eq!((merged.points, merged.max), (2, 0.5));
    assert!((merged.mean() - 0.3).abs() < 1e-15);
    assert_eq!(Dropped::default().mean(), 0.0);
}
