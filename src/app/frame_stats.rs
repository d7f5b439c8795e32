//! Two small meters of the window: the UI thread's time per frame over a whole walk
//! (`DATALEAF_FRAME_LOG=FILE`), and each lane's steps per second (shown beside the lane).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The environment variable naming the file the frame-time summary of every walk is appended to.
pub const FRAME_LOG: &str = "DATALEAF_FRAME_LOG";

/// Nearest-rank percentiles of a sample, in its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f32,
    pub p90: f32,
    pub p99: f32,
    pub max: f32,
}

impl Percentiles {
    /// None for an empty sample; NaNs sort last (they count as the largest).
    pub fn of(values: &[f32]) -> Option<Percentiles> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let n = sorted.len();
        let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        (n > 0).then(|| Percentiles {
            count: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted[n - 1],
        })
    }

    fn json(&self) -> serde_json::Value {
        let round = |v: f32| (v as f64 * 100.0).round() / 100.0;
        serde_json::json!({
            "count": self.count,
            "p50": round(self.p50),
            "p90": round(self.p90),
            "p99": round(self.p99),
            "max": round(self.max),
        })
    }
}

/// The calling thread's CPU time (user + system) so far, where the platform tells it.
fn thread_cpu() -> Option<Duration> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
        ok.then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// What the app tells the log each frame.
pub struct FrameFacts {
    pub session: u64,
    /// The walks are playing (recording begins on the first such frame of a session).
    pub playing: bool,
    /// Both lanes have ended.
    pub finished: bool,
    /// Wall-clock milliseconds `App::ui` took this frame.
    pub ui_ms: f32,
    /// eframe's figure for the previous frame: `App::ui`, tessellation and painting, vsync waits
    /// excluded.
    pub previous_work_ms: Option<f32>,
    /// The window's inner size in points.
    pub size: [f32; 2],
    pub model: String,
    pub steps: [usize; 2],
    pub steps_per_second: [Option<f32>; 2],
}

/// Frame times of one walk, from its first playing frame to the frame that shows it finished.
struct Recording {
    session: u64,
    began: Instant,
    ui: Vec<f32>,
    work: Vec<f32>,
    cpu: Vec<f32>,
    interval: Vec<f32>,
}

/// The frame-time log of `DATALEAF_FRAME_LOG`.
pub struct FrameLog {
    path: PathBuf,
    recording: Option<Recording>,
    last_cpu: Option<Duration>,
    last_frame: Option<Instant>,
    /// A session already written (a finished walk is not recorded again when played on).
    written: Option<u64>,
}

impl FrameLog {
    /// The log asked for by the environment, if any.
    pub fn from_env() -> Option<FrameLog> {
        let path = std::env::var_os(FRAME_LOG)?;
        Some(FrameLog::new(PathBuf::from(path)))
    }

    pub fn new(path: PathBuf) -> FrameLog {
        FrameLog {
            path,
            recording: None,
            last_cpu: None,
            last_frame: None,
            written: None,
        }
    }

    /// Take one frame's figures; when the walk has ended, append its summary to the file and
    /// return it (one JSON object per line).
    pub fn frame(&mut self, facts: &FrameFacts) -> Option<Result<String, String>> {
        let now = Instant::now();
        let cpu = thread_cpu();
        let cpu_ms = cpu
            .zip(self.last_cpu)
            .map(|(c, l)| c.saturating_sub(l).as_secs_f32() * 1000.0);
        let interval_ms = self
            .last_frame
            .map(|l| now.duration_since(l).as_secs_f32() * 1000.0);
        self.last_cpu = cpu;
        self.last_frame = Some(now);
        if self
            .recording
            .as_ref()
            .is_some_and(|r| r.session != facts.session)
        {
            // A new walk replaced the one being recorded before it ended.
            self.recording = None;
        }
        let fresh = self.written != Some(facts.session);
        if self.recording.is_none() && facts.playing && !facts.finished && fresh {
            self.recording = Some(Recording {
                session: facts.session,
                began: now,
                ui: Vec::new(),
                work: Vec::new(),
                cpu: Vec::new(),
                interval: Vec::new(),
            });
            // This frame's own figures count; what came before (the previous frame) does not.
            let r = self.recording.as_mut().expect("set above");
            r.ui.push(facts.ui_ms);
            return None;
        }
        let r = self.recording.as_mut()?;
        r.ui.push(facts.ui_ms);
        // eframe reports each frame's work one frame later, so this is the previous frame's.
        r.work.extend(facts.previous_work_ms);
        r.cpu.extend(cpu_ms);
        r.interval.extend(interval_ms);
        if !facts.finished {
            return None;
        }
        let r = self.recording.take().expect("recording");
        self.written = Some(facts.session);
        let mut summary = serde_json::json!({
            "window": [facts.size[0].round(), facts.size[1].round()],
            "model": facts.model,
            "frames": r.ui.len(),
            "seconds": (r.began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "leaf_steps": facts.steps[0],
            "kernel_steps": facts.steps[1],
            "leaf_steps_per_second": facts.steps_per_second[0].map(|v| (v as f64 * 10.0).round() / 10.0),
            "kernel_steps_per_second": facts.steps_per_second[1].map(|v| (v as f64 * 10.0).round() / 10.0),
        });
        for (key, values) in [
            ("frame_work_ms", &r.work),
            ("ui_ms", &r.ui),
            ("thread_cpu_ms", &r.cpu),
            ("interval_ms", &r.interval),
        ] {
            if let Some(p) = Percentiles::of(values) {
                summary[key] = p.json();
            }
        }
        let line = summary.to_string();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        Some(match written {
            Ok(()) => Ok(line),
            Err(e) => Err(format!(
                "{}: cannot write the frame log: {e}",
                self.path.display()
            )),
        })
    }
}

/// Seconds over which a lane's steps per second are counted.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// A lane's pace: when its recent frames arrived, and how long the worker took to compute them.
#[derive(Default)]
pub struct LaneRate {
    arrivals: std::collections::VecDeque<(Instant, usize)>,
    step_ms: std::collections::VecDeque<f32>,
    /// The rate of the walk so far: its first frame's arrival and step.
    first: Option<(Instant, usize)>,
    last: Option<(Instant, usize)>,
}

impl LaneRate {
    /// Forget the old walk.
    pub fn reset(&mut self) {
        *self = LaneRate::default();
    }

    /// A frame of step `index` arrived at `at`; the worker spent `step_ms` computing it.
    pub fn arrived(&mut self, at: Instant, index: usize, step_ms: f32) {
        self.first.get_or_insert((at, index));
        self.last = Some((at, index));
        self.arrivals.push_back((at, index));
        while self
            .arrivals
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            self.arrivals.pop_front();
        }
        if step_ms.is_finite() && step_ms > 0.0 {
            self.step_ms.push_back(step_ms);
            if self.step_ms.len() > 60 {
                self.step_ms.pop_front();
            }
        }
    }

    /// Steps per second over the last two seconds of frames (None until two frames are in).
    pub fn recent(&self) -> Option<f32> {
        rate(self.arrivals.front().copied(), self.arrivals.back().copied())
    }

    /// Steps per second from the walk's first frame to its newest.
    pub fn overall(&self) -> Option<f32> {
        rate(self.first, self.last)
    }

    /// The worker's median time for one step of this lane, milliseconds.
    pub fn step_ms(&self) -> Option<f32> {
        let v: Vec<f32> = self.step_ms.iter().copied().collect();
        Percentiles::of(&v).map(|p| p.p50)
    }

    /// The steps/s a lane would run at if its steps were all the worker did.
    pub fn possible(&self) -> Option<f32> {
        self.step_ms().map(|ms| 1000.0 / ms)
    }
}

fn rate(first: Option<(Instant, usize)>, last: Option<(Instant, usize)>) -> Option<f32> {
    let ((t0, i0), (t1, i1)) = (first?, last?);
    let seconds = t1.duration_since(t0).as_secs_f32();
    (i1 > i0 && seconds > 0.0).then(|| (i1 - i0) as f32 / seconds)
}

/// The readout beside a lane: "31 steps/s".
pub fn rate_text(steps_per_second: f32) -> String {
    if steps_per_second >= 10.0 {
        format!("{steps_per_second:.0} steps/s")
    } else {
        format!("{steps_per_second:.1} steps/s")
    }
}
