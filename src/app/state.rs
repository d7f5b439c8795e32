//! What the app remembers between runs, the walk parameters, and the papers' presets.

use serde::{Deserialize, Serialize};

use crate::data::DEFAULT_DATASET;
use crate::model::DEFAULT_MODEL;
use crate::walk::{
    Mode, WalkConfig, DEFAULT_KERNEL_STEPS, DEFAULT_LEAF_MAX_STEPS, DEFAULT_STEP, DEFAULT_STOP,
};

/// An image the walks start from or head to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Choice {
    /// An image of the current dataset, by index.
    Index(usize),
    /// Drawn on the pad: pixels in [0, 1], the dataset's shape.
    Drawn(Vec<f32>),
}

impl Choice {
    pub fn describe(&self) -> String {
        match self {
            Choice::Index(i) => format!("#{i}"),
            Choice::Drawn(_) => "drawn".into(),
        }
    }
}

/// Where the kernel lane heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelDirection {
    /// A fixed seeded Gaussian direction, as the papers do.
    Random,
    /// Toward the target, projected onto ker G.
    TowardTarget,
}

/// Which classes G is built from in the app's walks (shared/REFERENCE.md section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassesInG {
    /// Exact up to AUTO_EXACT_MAX classes, the top AUTO_TOP_K above (ImageNet-size models).
    Auto,
    /// All C classes: the exact G.
    All,
    /// The K most probable classes.
    Top(usize),
}

/// `ClassesInG::Auto` is exact up to this many classes (CIFAR-100's C = 100: a step in ~0.1 s).
pub const AUTO_EXACT_MAX: usize = 100;
/// `ClassesInG::Auto` keeps this many classes above AUTO_EXACT_MAX.
pub const AUTO_TOP_K: usize = 10;

impl ClassesInG {
    /// The top-k option for a model of `classes` classes: None when G is exact.
    pub fn top_k(self, classes: usize) -> Option<usize> {
        let k = match self {
            ClassesInG::Auto if classes > AUTO_EXACT_MAX => AUTO_TOP_K,
            ClassesInG::Auto | ClassesInG::All => return None,
            ClassesInG::Top(k) => k.max(1),
        };
        (k < classes).then_some(k)
    }
}

/// The walks' parameters, in pixel units (shared/DESIGN.md "Images and units").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    pub step: f32,
    pub stop: f32,
    pub leaf_max_steps: usize,
    pub kernel_max_steps: usize,
    pub seed: u64,
    pub kernel_direction: KernelDirection,
    /// Kernel steps taken from the start before the walks: a noisy start on another leaf.
    pub noise_steps: usize,
    /// The leaf lane runs the strict reach search (src/walk/reach.rs) instead of the leaf walk.
    pub reach: bool,
    /// The classes G is built from.
    pub classes_in_g: ClassesInG,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            step: DEFAULT_STEP,
            stop: DEFAULT_STOP,
            leaf_max_steps: DEFAULT_LEAF_MAX_STEPS,
            kernel_max_steps: DEFAULT_KERNEL_STEPS,
            seed: 0,
            kernel_direction: KernelDirection::Random,
            noise_steps: 0,
            reach: false,
            classes_in_g: ClassesInG::Auto,
        }
    }
}

impl Params {
    pub fn leaf_config(&self) -> WalkConfig {
        WalkConfig {
            step: self.step,
            stop: self.stop,
            max_steps: self.leaf_max_steps,
            seed: self.seed,
            ..WalkConfig::defaults(Mode::Leaf)
        }
    }

    pub fn kernel_config(&self) -> WalkConfig {
        WalkConfig {
            step: self.step,
            stop: self.stop,
            max_steps: self.kernel_max_steps,
            seed: self.seed,
            ..WalkConfig::defaults(Mode::Kernel)
        }
    }

    /// The noisy start's seed: the CLI's `--noise-steps` uses the walk seed + 1, so the two agree.
    pub fn noise_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }
}

/// Everything persisted between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Model spec: a shipped model's name or a .json path.
    pub model: String,
    /// Dataset spec: a built-in name or a path.
    pub dataset: String,
    pub start: Option<Choice>,
    pub target: Option<Choice>,
    /// Walk toward the horizontal mirror of the target.
    pub mirror: bool,
    pub params: Params,
    /// Steps per second per lane; `None` runs as fast as the worker can.
    pub speed: Option<f32>,
    pub lecture: bool,
    /// The high-contrast dark theme (lecture halls differ: a dark room, a bright one).
    pub dark: bool,
    /// The gallery panel is shown (lecture mode hides it to give the walks the room).
    pub gallery: bool,
    /// Folder the exports are written to.
    pub export_dir: String,
    pub recent_models: Vec<String>,
    pub recent_datasets: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let first = &PRESETS[0];
        Settings {
            model: DEFAULT_MODEL.into(),
            dataset: DEFAULT_DATASET.into(),
            start: Some(Choice::Index(first.start)),
            target: first.target.map(Choice::Index),
            mirror: false,
            params: Params::default(),
            speed: Some(30.0),
            lecture: false,
            dark: false,
            gallery: true,
            export_dir: ".".into(),
            recent_models: Vec::new(),
            recent_datasets: Vec::new(),
        }
    }
}

/// Keep a short most-recent-first list of paths.
pub fn remember(list: &mut Vec<String>, spec: &str) {
    list.retain(|s| s != spec);
    list.insert(0, spec.to_string());
    list.truncate(8);
}

/// A domain the presets come from: a model and the dataset it was trained for, loaded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Handwritten digits: the papers' medium CNN and the MNIST test set.
    Digits,
    /// Zalando's clothes: the same architecture trained on Fashion-MNIST, and its test set.
    Fashion,
}

impl Domain {
    pub const ALL: [Domain; 2] = [Domain::Digits, Domain::Fashion];

    pub fn name(self) -> &'static str {
        match self {
            Domain::Digits => "MNIST",
            Domain::Fashion => "Fashion-MNIST",
        }
    }

    /// The model spec the domain's presets walk on.
    pub fn model(self) -> &'static str {
        match self {
            Domain::Digits => DEFAULT_MODEL,
            Domain::Fashion => "fashion-mnist-medium-cnn",
        }
    }

    /// The dataset spec the presets' indices point into.
    pub fn dataset(self) -> &'static str {
        match self {
            Domain::Digits => DEFAULT_DATASET,
            Domain::Fashion => "fashion-mnist",
        }
    }
}

/// A walk worth showing: the papers' (shared/REFERENCE.md section 3) on MNIST, and walks on
/// Fashion-MNIST chosen by looking at their strips.
pub struct Preset {
    /// Short: the top bar's button.
    pub title: &'static str,
    /// The tooltip and the menu's hint.
    pub about: &'static str,
    /// One sentence for the audience: what they are looking at (shown in lecture mode).
    pub caption: &'static str,
    pub domain: Domain,
    pub start: usize,
    /// None: a kernel walk only (the leaf lane has nothing to walk toward).
    pub target: Option<usize>,
    pub mirror: bool,
    pub noise_steps: usize,
    pub seed: u64,
}

pub const PRESETS: [Preset; 8] = [
    Preset {
        title: "4185 → 5874",
        about: "Data-leaf walk between two test digits (Grementieri & Fioresi): a 1 becomes a 5",
        caption: "Walking along the data leaf, a 1 turns into a 5 through images that still look like handwriting, while the kernel walk only adds noise.",
        domain: Domain::Digits,
        start: 4185,
        target: Some(5874),
        mirror: false,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "3898 → 9709",
        about: "Data-leaf walk between two test digits",
        caption: "The leaf walk morphs one digit into another; the model's prediction changes only when the image has changed.",
        domain: Domain::Digits,
        start: 3898,
        target: Some(9709),
        mirror: false,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "Kernel walk 6311",
        about: "Across leaves along a random direction (seed 0): noise appears, the prediction stays",
        caption: "Moving only in directions the model cannot see (ker G) fills the image with noise, yet the prediction does not change.",
        domain: Domain::Digits,
        start: 6311,
        target: None,
        mirror: false,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "Noisy 2386 → 7528",
        about: "250 kernel steps make a noisy start on another leaf, then a leaf walk to a clean digit",
        caption: "From a noisy image on another leaf, the walk toward a clean digit has to cross leaves to get there.",
        domain: Domain::Digits,
        start: 2386,
        target: Some(7528),
        mirror: false,
        noise_steps: 250,
        seed: 0,
    },
    Preset {
        title: "125 → mirrored 6349",
        about: "Data-leaf walk toward a mirrored digit, a symbol not in MNIST",
        caption: "The target is a mirrored digit, a symbol the model never saw: the walk heads for it along the leaf of real digits.",
        domain: Domain::Digits,
        start: 125,
        target: Some(6349),
        mirror: true,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "Shirt 26 → sneaker 9",
        about: "Fashion-MNIST: data-leaf walk from a shirt to a sneaker (the model says sneaker before the eye does)",
        caption: "On clothes, walking along the data leaf turns a shirt into a sneaker, and the model changes its mind while the image is still mostly shirt.",
        domain: Domain::Fashion,
        start: 26,
        target: Some(9),
        mirror: false,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "Kernel walk: bag 30",
        about: "Fashion-MNIST: a kernel walk from a handbag (seed 0); after 1000 steps of noise the model still says bag, p ≥ 0.90",
        caption: "The handbag drowns in noise the model cannot see, and after a thousand steps it still says bag.",
        domain: Domain::Fashion,
        start: 30,
        target: None,
        mirror: false,
        noise_steps: 0,
        seed: 0,
    },
    Preset {
        title: "Noisy trouser 2 → dress 13",
        about: "Fashion-MNIST: 250 kernel steps make noisy trousers on another leaf, then a leaf walk to a clean dress",
        caption: "From noisy trousers on another leaf, the walk reaches a clean dress: the noise fades as the leaf walk crosses back to the data.",
        domain: Domain::Fashion,
        start: 2,
        target: Some(13),
        mirror: false,
        noise_steps: 250,
        seed: 0,
    },
];

/// The presets of one domain, with their positions in `PRESETS`.
pub fn presets_of(domain: Domain) -> impl Iterator<Item = (usize, &'static Preset)> {
    PRESETS
        .iter()
        .enumerate()
        .filter(move |(_, p)| p.domain == domain)
}

/// Find a preset by number (1-based) or a word of its title, for `--preset`.
pub fn find_preset(spec: &str) -> Option<usize> {
    if let Ok(n) = spec.parse::<usize>() {
        if (1..=PRESETS.len()).contains(&n) {
            return Some(n - 1);
        }
    }
    let spec = spec.to_lowercase();
    PRESETS
        .iter()
        .position(|p| p.title.to_lowercase().contains(&spec))
}
