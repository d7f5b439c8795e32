//! Every user action with a name and, for some, a keyboard shortcut: menus, buttons and shortcuts
//! are all built from this one list, so they cannot disagree.

use egui::{Key, KeyboardShortcut, Modifiers};

use super::state::PRESETS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PlayPause,
    Step,
    Reset,
    LectureMode,
    FullScreen,
    Gallery,
    RandomStart,
    SwapStartTarget,
    MirrorTarget,
    OpenModel,
    OpenDataset,
    TypePaths,
    ExportStrip,
    ExportGif,
    ExportCsv,
    Experiments,
    /// The instruments window: leaf directions and charts.
    Instruments,
    /// Switch between the image walks and the 2-D plane view.
    Plane,
    /// One of `state::PRESETS`, by position.
    Preset(usize),
    /// The presenter's clicker (Page Down): the walk's next key frame, or the next preset.
    NextSlide,
    /// The presenter's clicker (Page Up): the walk's previous key frame, or the previous preset.
    PreviousSlide,
    /// Blank the screen (B), as a presenter does between slides.
    Blank,
    /// Light or dark theme.
    DarkTheme,
    /// Show or hide the secondary settings (speed, step size, ...) in lecture mode or a small window.
    Settings,
    Quit,
}

impl Command {
    /// The commands in menu order (presets included).
    pub fn all() -> Vec<Command> {
        let mut all = vec![
            Command::PlayPause,
            Command::Step,
            Command::Reset,
            Command::LectureMode,
            Command::FullScreen,
            Command::Gallery,
            Command::RandomStart,
            Command::SwapStartTarget,
            Command::MirrorTarget,
            Command::OpenModel,
            Command::OpenDataset,
            Command::TypePaths,
            Command::ExportStrip,
            Command::ExportGif,
            Command::ExportCsv,
            Command::Experiments,
            Command::Instruments,
            Command::Plane,
            Command::NextSlide,
            Command::PreviousSlide,
            Command::Blank,
            Command::DarkTheme,
            Command::Settings,
        ];
        all.extend((0..PRESETS.len()).map(Command::Preset));
        all.push(Command::Quit);
        all
    }

    pub fn name(self) -> String {
        match self {
            Command::PlayPause => "Play / pause".into(),
            Command::Step => "Single step".into(),
            Command::Reset => "Reset".into(),
            Command::LectureMode => "Lecture mode".into(),
            Command::FullScreen => "Full screen".into(),
            Command::Gallery => "Show the gallery".into(),
            Command::RandomStart => "Random start".into(),
            Command::SwapStartTarget => "Swap start and target".into(),
            Command::MirrorTarget => "Mirror the target".into(),
            Command::OpenModel => "Open model…".into(),
            Command::OpenDataset => "Open dataset…".into(),
            Command::TypePaths => "Type a path…".into(),
            Command::ExportStrip => "Export PNG strip".into(),
            Command::ExportGif => "Export GIF".into(),
            Command::ExportCsv => "Export CSV".into(),
            Command::Experiments => "Experiments…".into(),
            Command::Instruments => "Instruments…".into(),
            Command::Plane => "2-D plane view".into(),
            Command::Preset(i) => PRESETS.get(i).map_or_else(String::new, |p| p.title.to_string()),
            Command::NextSlide => "Next key frame or preset".into(),
            Command::PreviousSlide => "Previous key frame or preset".into(),
            Command::Blank => "Blank the screen".into(),
            Command::DarkTheme => "Dark theme".into(),
            Command::Settings => "Walk settings".into(),
            Command::Quit => "Quit".into(),
        }
    }

    pub fn tooltip(self) -> &'static str {
        match self {
            Command::PlayPause => "Run both walks, or pause them",
            Command::Step => "One step of each walk",
            Command::Reset => "Back to the start, with the current settings",
            Command::LectureMode => "For a projector: large type, high contrast, the walks and the two main plots large, the rest behind one toggle",
            Command::FullScreen => "Fill the screen (also F5)",
            Command::Gallery => "Show or hide the dataset panel (lecture mode hides it)",
            Command::RandomStart => "A random image of the gallery as the start",
            Command::SwapStartTarget => "Walk the other way",
            Command::MirrorTarget => "Walk toward the target's mirror image, a symbol not in the data",
            Command::OpenModel => "A model's .json file (its .safetensors beside it)",
            Command::OpenDataset => "An IDX folder or images file",
            Command::TypePaths => "Open a model or dataset by typing its path",
            Command::ExportStrip => "Nine evenly spaced frames of both walks, as a PNG",
            Command::ExportGif => "Both walks as an animated GIF",
            Command::ExportCsv => "The plotted series, one row per step",
            Command::Experiments => "Run the papers' batch experiments on the loaded model",
            Command::Instruments => "The leaf directions at the current points and a chart of the neighbourhood",
            Command::Plane => "A two-feature classifier trained live: its leaves, kernel leaves, SiMEC and SiMExp on one canvas (or back to the images)",
            Command::Preset(i) => PRESETS.get(i).map_or("", |p| p.about),
            Command::NextSlide => "Like a slide: the walk's next key frame (the filmstrip's), then the next preset (a clicker's Page Down)",
            Command::PreviousSlide => "Like a slide: the walk's previous key frame, then the previous preset (a clicker's Page Up)",
            Command::Blank => "Black out the window until B is pressed again",
            Command::DarkTheme => "High-contrast dark theme (or back to light)",
            Command::Settings => "Speed, step size, stop distance, steps, kernel direction, seed, noisy start",
            Command::Quit => "Close dataleaf",
        }
    }

    pub fn shortcut(self) -> Option<KeyboardShortcut> {
        let key = |k| Some(KeyboardShortcut::new(Modifiers::NONE, k));
        let ctrl = |k| Some(KeyboardShortcut::new(Modifiers::COMMAND, k));
        match self {
            Command::PlayPause => key(Key::Space),
            Command::Step => key(Key::ArrowRight),
            Command::Reset => key(Key::R),
            Command::LectureMode => key(Key::L),
            Command::FullScreen => key(Key::F),
            Command::Gallery => key(Key::G),
            Command::RandomStart => key(Key::N),
            Command::SwapStartTarget => key(Key::S),
            Command::MirrorTarget => key(Key::M),
            Command::OpenModel => ctrl(Key::O),
            Command::OpenDataset => ctrl(Key::D),
            Command::TypePaths => ctrl(Key::L),
            Command::ExportStrip => ctrl(Key::E),
            Command::ExportGif => ctrl(Key::G),
            Command::ExportCsv => ctrl(Key::T),
            Command::Experiments => ctrl(Key::R),
            Command::Instruments => key(Key::I),
            Command::Plane => key(Key::P),
            Command::Preset(i) => [
                Key::Num1,
                Key::Num2,
                Key::Num3,
                Key::Num4,
                Key::Num5,
                Key::Num6,
                Key::Num7,
                Key::Num8,
                Key::Num9,
            ]
            .get(i)
            .and_then(|&k| key(k)),
            Command::NextSlide => key(Key::PageDown),
            Command::PreviousSlide => key(Key::PageUp),
            Command::Blank => key(Key::B),
            Command::DarkTheme => key(Key::D),
            Command::Settings => key(Key::W),
            Command::Quit => ctrl(Key::Q),
        }
    }

    /// A second key for the same command: F5, which a presenter's clicker sends, for full screen.
    pub fn alternative(self) -> Option<KeyboardShortcut> {
        match self {
            Command::FullScreen => Some(KeyboardShortcut::new(Modifiers::NONE, Key::F5)),
            _ => None,
        }
    }

    /// The shortcut as the platform writes it, or "".
    pub fn shortcut_text(self, ctx: &egui::Context) -> String {
        self.shortcut()
            .map_or_else(String::new, |s| ctx.format_shortcut(&s))
    }

    /// A menu entry (or button) for the command; true when it was clicked.
    pub fn menu_item(self, ui: &mut egui::Ui) -> bool {
        let button = egui::Button::new(self.name()).shortcut_text(self.shortcut_text(ui.ctx()));
        let clicked = ui.add(button).on_hover_text(self.tooltip()).clicked();
        if clicked {
            ui.close();
        }
        clicked
    }

    /// Commands whose shortcut was pressed this frame (consumed, so widgets do not see them).
    /// Shortcuts without a modifier are left alone while a text field has the keyboard.
    pub fn pressed(ctx: &egui::Context) -> Vec<Command> {
        let typing = ctx.text_edit_focused();
        let mut pressed = Vec::new();
        ctx.input_mut(|input| {
            for command in Command::all() {
                for shortcut in [command.shortcut(), command.alternative()].into_iter().flatten() {
                    if typing && shortcut.modifiers.is_none() {
                        continue;
                    }
                    if input.consume_shortcut(&shortcut) {
                        pressed.push(command);
                    }
                }
            }
        });
        pressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_are_unique() {
        let all: Vec<_> = Command::all()
            .into_iter()
            .flat_map(|c| [c.shortcut(), c.alternative()])
            .flatten()
            .collect();
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(a), "{a:?} is bound twice");
        }
    }

    /// The commands a frame with this key pressed (no modifiers) runs.
    fn on_key(key: Key) -> Vec<Command> {
        let ctx = egui::Context::default();
        let input = egui::RawInput {
            events: vec![egui::Event::Key {
                key,
                physical_key: None,
                pressed: true,
                repeat: false,
                modifiers: Modifiers::NONE,
            }],
            ..Default::default()
        };
        let mut pressed = Vec::new();
        let _ = ctx.run_ui(input, |ui| pressed = Command::pressed(ui.ctx()));
        pressed
    }

    #[test]
    fn a_presenters_clicker_keys_run_their_commands() {
        assert_eq!(on_key(Key::PageDown), vec![Command::NextSlide]);
        assert_eq!(on_key(Key::PageUp), vec![Command::PreviousSlide]);
        assert_eq!(on_key(Key::B), vec![Command::Blank]);
        assert_eq!(on_key(Key::F5), vec![Command::FullScreen]);
        assert_eq!(on_key(Key::F), vec![Command::FullScreen]);
    }
}
