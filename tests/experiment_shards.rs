//! Experiments at scale: `--shard K/N` parts merged into exactly the single run, the merge's
//! refusals, `--samples all`, SVG figures, and every experiment on a colour model (or one line why
//! not).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");
const CIFAR_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/torch/cifar-small.json"
);
const CIFAR_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/data/cifar10-samples");

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
    let dir = std::env::temp_dir().join(format!("dataleaf-shards-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run shard `k` of `n` of dataset-spectra (40 samples) into `dir/part-k.json`.
fn shard(dir: &Path, k: usize, n: usize, extra: &[&str]) -> PathBuf {
    let path = dir.join(format!("part-{k}-of-{n}{}.json", extra.join("")));
    let spec = format!("{k}/{n}");
    let mut args = vec![
        "experiment",
        "dataset-spectra",
        "--samples",
        "40",
        "--shard",
        &spec,
        "--out",
        s(&path),
    ];
    args.extend_from_slice(extra);
    let out = dataleaf(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "the part goes to --out");
    // Progress names the shard (stderr is not a terminal here: plain lines).
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("[shard {k}/{n}]")));
    path
}

#[test]
fn three_shards_merge_into_exactly_the_single_run_and_bad_sets_of_parts_are_refused() {
    let dir = scratch("spectra");
    let single_png = dir.join("single.png");
    let single = ok(&dataleaf(&[
        "experiment",
        "dataset-spectra",
        "--samples",
        "40",
        "--json",
        "--plot",
        s(&single_png),
    ]));
    let single_summary = ok(&dataleaf(&["experiment", "dataset-spectra", "--samples", "40"]));
    // Shards run out of order, and are merged in yet another order.
    let p3 = shard(&dir, 3, 3, &[]);
    let p1 = shard(&dir, 1, 3, &[]);
    let p2 = shard(&dir, 2, 3, &[]);
    let part: Value = serde_json::from_str(&std::fs::read_to_string(&p2).unwrap()).unwrap();
    assert_eq!(part["shard"], "2/3");
    assert_eq!(part["run"]["experiment"], "dataset-spectra");
    assert_eq!(part["run"]["samples"], "40");
    assert!(part["samples"][0]["log10_lambda"].is_array(), "per-sample values");

    let merged_png = dir.join("merged.png");
    let merged = ok(&dataleaf(&[
        "experiment",
        "merge",
        s(&p2),
        s(&p3),
        s(&p1),
        "--json",
        "--plot",
        s(&merged_png),
    ]));
    assert_eq!(
        merged, single,
        "the merged JSON is the single run's, byte for byte"
    );
    assert_eq!(
        std::fs::read(&merged_png).unwrap(),
        std::fs::read(&single_png).unwrap(),
        "same figure"
    );
    assert_eq!(
        ok(&dataleaf(&["experiment", "merge", s(&p1), s(&p2), s(&p3)])),
        single_summary
    );
    let v: Value = serde_json::from_str(&merged).unwrap();
    assert_eq!(v["datasets"][0]["count"], 40);

    // A missing shard: named, with the command that makes it.
    let err = refused(&dataleaf(&["experiment", "merge", s(&p1), s(&p3)]));
    assert!(
        err.contains("missing 1 of 3 shards: 2") && err.contains("--shard 2/3"),
        "{err}"
    );
    // A duplicate.
    let copy = dir.join("copy-of-1.json");
    std::fs::copy(&p1, &copy).unwrap();
    let err = refused(&dataleaf(&[
        "experiment",
        "merge",
        s(&p1),
        s(&p2),
        s(&copy),
        s(&p3),
    ]));
    assert!(err.contains("shard 1/3 given twice"), "{err}");
    // A part of another run (another seed), and one of another split.
    let other = shard(&dir, 2, 3, &["--seed", "7"]);
    let err = refused(&dataleaf(&["experiment", "merge", s(&p1), s(&other), s(&p3)]));
    assert!(err.contains("another run") && err.contains("seed"), "{err}");
    let half = shard(&dir, 1, 2, &[]);
    let err = refused(&dataleaf(&["experiment", "merge", s(&p1), s(&half)]));
    assert!(err.contains("different splits"), "{err}");
    // Files that are not parts.
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "").unwrap();
    assert!(refused(&dataleaf(&["experiment", "merge", s(&empty)])).contains("empty"));
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"x\": 1}").unwrap();
    assert!(refused(&dataleaf(&["experiment", "merge", s(&junk)])).contains("not a dataleaf experiment part"));
    assert!(refused(&dataleaf(&["experiment", "merge"])).contains("name the part files"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_shard_and_samples_arguments_get_one_line() {
    for (args, says) in [
        (vec!["experiment", "ood", "--shard", "4/3"], "--shard"),
        (vec!["experiment", "ood", "--shard", "x"], "--shard"),
        (vec!["experiment", "ood", "--samples", "0"], "--samples"),
        (vec!["experiment", "ood", "--samples", "some"], "--samples"),
        (vec!["experiment", "ood", "--plot", "a.pdf"], ".svg"),
        (
            vec!["experiment", "ood", "--shard", "1/2", "--plot", "a.png"],
            "merge",
        ),
        (vec!["experiment", "ood", "extra.json"], "merge"),
    ] {
        let err = refused(&dataleaf(&args));
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn svg_figures_are_vector_drawings_of_the_same_layout() {
    let dir = scratch("svg");
    let svg = dir.join("ood.svg");
    let out = ok(&dataleaf(&[
        "experiment",
        "ood",
        "--samples",
        "12",
        "--plot",
        s(&svg),
    ]));
    assert!(out.contains("figure: "), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(
        text.contains("<text") && text.contains("DejaVu Sans"),
        "text stays text"
    );
    assert!(
        text.contains("Out-of-distribution detection with G"),
        "the title is there"
    );
    assert!(
        text.contains("<polyline") || text.contains("<path"),
        "curves are paths"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_experiment_runs_on_a_colour_model_or_says_why_not() {
    let dir = scratch("colour");
    for name in dataleaf::experiments::NAMES {
        let svg = dir.join(format!("{name}.svg"));
        let out = dataleaf(&[
            "experiment",
            name,
            "--model",
            CIFAR_MODEL,
            "--dataset",
            CIFAR_DATA,
            "--samples",
            "2",
            "--json",
            "--plot",
            s(&svg),
        ]);
        if name == "training" {
            let err = refused(&out);
            assert!(
                err.contains("training does not apply") && err.contains("checkpoint series"),
                "{err}"
            );
            continue;
        }
        let v: Value = serde_json::from_str(&ok(&out)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            std::fs::read_to_string(&svg).unwrap().starts_with("<svg"),
            "{name}"
        );
        match name {
            "dataset-spectra" => {
                let names: Vec<&str> = v["datasets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["name"].as_str().unwrap())
                    .collect();
                // The comparison sets are colour: MNIST and Fashion-MNIST brought to RGB 32 x 32.
                assert_eq!(names[1..3], ["MNIST RGB", "Fashion-MNIST RGB"], "{names:?}");
                assert!(names[4].starts_with("mirrored"), "{names:?}");
                assert_eq!(v["model"], "cifar-small");
            }
            "ood" => assert!(v["auc"]["MNIST RGB"]["log10_lambda_1"].is_number(), "{v}"),
            "involutivity" => {
                assert_eq!(
                    v["models"].as_array().unwrap().len(),
                    1,
                    "only the model under study"
                );
                assert!(v["note"].as_str().unwrap().contains("MNIST"));
            }
            "denoise" => assert!(v["candidates"].as_str().unwrap().contains("other images")),
            _ => {}
        }
    }
    // The whole dataset: every one of the 20 CIFAR-10 images, and the other sets as many.
    let v: Value = serde_json::from_str(&ok(&dataleaf(&[
        "experiment",
        "ood",
        "--model",
        CIFAR_MODEL,
        "--dataset",
        CIFAR_DATA,
        "--samples",
        "all",
        "--json",
    ])))
    .unwrap();
    let counts = v["counts"].as_object().unwrap();
    assert!(counts.values().all(|c| c == 20), "{counts:?}");
    // A model and a dataset of different shapes: one line naming both.
    let err = refused(&dataleaf(&[
        "experiment",
        "ood",
        "--model",
        CIFAR_MODEL,
        "--samples",
        "2",
    ]));
    assert!(err.contains("cifar-small") && err.contains("3x32x32"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
