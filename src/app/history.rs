//! The frames of the current session as they arrive from the worker, and the series plotted from
//! them (also what the CSV export writes).

use super::worker::{Frame, Lane, Reply};

#[derive(Default)]
pub struct History {
    /// Frames of other sessions are stale and dropped.
    pub session: u64,
    /// The image both walks start from (the noisy start once it is made).
    pub start: Option<Vec<f32>>,
    /// Bumped when `start` changes within a session (the noisy start arrives).
    pub start_version: usize,
    pub target: Option<Vec<f32>>,
    /// Frames per lane, indexed by `Lane as usize`, in step order.
    pub lanes: [Vec<Frame>; 2],
    /// Noisy start in progress: kernel steps done of total.
    pub preparing: Option<(usize, usize)>,
}

impl History {
    /// Forget everything and expect frames of `session`.
    pub fn reset(&mut self, session: u64, start: Option<Vec<f32>>, target: Option<Vec<f32>>) {
        *self = History {
            session,
            start,
            target,
            ..History::default()
        };
    }

    /// Take in a worker reply that concerns walks; returns true if anything changed.
    pub fn absorb(&mut self, reply: &Reply) -> bool {
        match reply {
            Reply::Preparing { session, done, total } if *session == self.session => {
                self.preparing = Some((*done, *total));
                true
            }
            Reply::Started { session, start } if *session == self.session => {
                self.preparing = None;
                self.start = Some(start.clone());
                self.start_version += 1;
                true
            }
            Reply::Frames(frames) => {
                let mut changed = false;
                for f in frames.iter().filter(|f| f.session == self.session) {
                    self.lanes[f.lane as usize].push(f.clone());
                    changed = true;
                }
                changed
            }
            _ => false,
        }
    }

    pub fn lane(&self, lane: Lane) -> &[Frame] {
        &self.lanes[lane as usize]
    }

    /// The longer lane's frame count.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(Vec::len).max().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame of `lane` shown at step `at` (its last one if the lane ended earlier); the latest
    /// when `at` is None.
    pub fn frame(&self, lane: Lane, at: Option<usize>) -> Option<&Frame> {
        let frames = self.lane(lane);
        match at {
            Some(i) => frames.get(i.min(frames.len().saturating_sub(1))),
            None => frames.last(),
        }
    }

    /// Both lanes have finished.
    pub fn finished(&self) -> bool {
        let ended = |l: &Vec<Frame>| l.last().is_some_and(|f| f.last);
        let kernel = &self.lanes[Lane::Kernel as usize];
        let leaf = &self.lanes[Lane::Leaf as usize];
        ended(kernel) && (self.target.is_none() || ended(leaf))
    }

    pub fn reached(&self) -> bool {
        self.lane(Lane::Leaf).last().is_some_and(|f| f.reached)
    }
}

/// A quantity plotted over steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Distance,
    MaxProb,
    Class,
    Trace,
}

impl Series {
    pub const ALL: [Series; 4] = [Series::Distance, Series::MaxProb, Series::Class, Series::Trace];

    pub fn title(self) -> &'static str {
        match self {
            Series::Distance => "distance to target",
            Series::MaxProb => "max probability",
            Series::Class => "predicted class",
            Series::Trace => "trace of G (log₁₀)",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            Series::Distance => "distance",
            Series::MaxProb => "max_prob",
            Series::Class => "class",
            Series::Trace => "trace",
        }
    }

    pub fn value(self, f: &Frame) -> f64 {
        match self {
            Series::Distance => f.distance as f64,
            Series::MaxProb => f.max_prob() as f64,
            Series::Class => f.argmax as f64,
            Series::Trace => f.trace.max(1e-30).log10(),
        }
    }

    /// [step, value] points, at most about `budget` of them: a long walk is cut into runs of
    /// consecutive steps, each drawn by its lowest and highest value (in step order), so thinning
    /// never hides a peak or a dip; the first and the last frame are always kept.
    pub fn points(self, frames: &[Frame], budget: usize) -> Vec<[f64; 2]> {
        let point = |f: &Frame| [f.index as f64, self.value(f)];
        if frames.len() <= budget.max(2) {
            return frames.iter().map(point).collect();
        }
        // Two points per run, and the first and last frames on their own.
        let runs = (budget.max(2) / 2).max(1);
        let run = (frames.len() - 1).div_ceil(runs);
        let mut points = Vec::with_capacity(2 * runs + 2);
        points.push(point(&frames[0]));
        for chunk in frames[..frames.len() - 1].chunks(run) {
            // A NaN (a distance can be one) gives way to any number.
            let (mut lo, mut hi) = (0, 0);
            let (mut low, mut high) = (self.value(&chunk[0]), self.value(&chunk[0]));
            for (i, f) in chunk.iter().enumerate().skip(1) {
                let v = self.value(f);
                if v < low || low.is_nan() {
                    (lo, low) = (i, v);
                }
                if v > high || high.is_nan() {
                    (hi, high) = (i, v);
                }
            }
            for i in [lo.min(hi), lo.max(hi)] {
                let p = point(&chunk[i]);
                if points.last() != Some(&p) {
                    points.push(p);
                }
            }
        }
        points.push(point(&frames[frames.len() - 1]));
        points
    }
}

/// The plotted series of both lanes as CSV, one row per step.
pub fn to_csv(history: &History, classes: &[String]) -> String {
    let mut out = String::from("step");
    for lane in Lane::BOTH {
        for column in [
            "distance",
            "max_prob",
            "class",
            "class_name",
            "trace",
            "rank",
            "off_leaf",
        ] {
            out.push_str(&format!(",{}_{column}", lane.short()));
        }
    }
    out.push('\n');
    for i in 0..history.len() {
        out.push_str(&i.to_string());
        for lane in Lane::BOTH {
            match history.lane(lane).get(i) {
                Some(f) => {
                    let name = classes
                        .get(f.argmax)
                        .cloned()
                        .unwrap_or_else(|| f.argmax.to_string());
                    out.push_str(&format!(
                        ",{},{},{},{},{:e},{},{}",
                        f.distance,
                        f.max_prob(),
                        f.argmax,
                        csv_field(&name),
                        f.trace,
                        f.rank,
                        f.off_leaf
                    ));
                }
                None => out.push_str(",,,,,,,"),
            }
        }
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: usize) -> Frame {
        Frame {
            session: 0,
            lane: Lane::Leaf,
            index,
            image: vec![],
            probs: vec![0.25, 0.75],
            argmax: 1,
            eigenvalues: vec![1.0, 0.0],
            rank: 1,
            trace: 1.0,
            distance: index as f32,
            off_leaf: 0.0,
            last: false,
            reached: false,
            step_ms: 1.0,
        }
    }

    #[test]
    fn series_points_keep_the_last_frame_within_budget() {
        let frames: Vec<Frame> = (0..1001).map(frame).collect();
        let points = Series::Distance.points(&frames, 100);
        assert!(points.len() <= 102);
        assert_eq!(points.last().unwrap()[0], 1000.0);
        assert_eq!(points[0][0], 0.0);
    }

    #[test]
    fn csv_has_a_row_per_step_and_fixed_columns() {
        let mut h = History::default();
        h.lanes[0] = (0..3).map(frame).collect();
        let csv = to_csv(&h, &["a".into(), "b".into()]);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 4);
        let n = rows[0].split(',').count();
        assert!(rows.iter().all(|r| r.split(',').count() == n));
        assert!(rows[1].contains(",b,"));
    }
}
