//! The export's path gate: `export_csv` writes only to the path the native save dialog (opened
//! from Rust by `choose_export_path`) answered in this session, once; never to a path the web view names.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::CommandError;

/// The save dialog's latest answer, not yet used by an export.
#[derive(Debug, Default)]
pub struct ExportPathGate {
    chosen: Mutex<Option<PathBuf>>,
}

impl ExportPathGate {
    pub fn new() -> ExportPathGate {
        ExportPathGate::default()
    }

    fn chosen(&self) -> MutexGuard<'_, Option<PathBuf>> {
        // The guarded value is a plain Option: a panic elsewhere cannot leave it half-written.
        self.chosen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers the save dialog's answer (replacing an earlier one not yet used) and returns it
    /// as the text the UI passes back to `export_csv`.
    pub fn remember(&self, path: PathBuf) -> Result<String, CommandError> {
        if !path.is_absolute() {
            return Err(CommandError::invalid(
                "path",
                "the save dialog did not answer an absolute path",
            ));
        }
        let shown = path.to_str().map(str::to_string).ok_or_else(|| {
            CommandError::invalid(
                "path",
                "choose a file name made of valid Unicode characters",
            )
        })?;
        *self.chosen() = Some(path);
        Ok(shown)
    }

    /// The remembered path if `requested` is it. One-shot: any request forgets the remembered
    /// path, so the next export needs the dialog again.
    pub fn take(&self, requested: &Path) -> Result<PathBuf, CommandError> {
        let chosen = self.chosen().take();
        if requested.as_os_str().is_empty() || !requested.is_absolute() {
            return Err(CommandError::invalid(
                "path",
                "choose where to save the export (an absolute path)",
            ));
        }
        match chosen {
            Some(chosen) if chosen == requested => Ok(chosen),
            Some(_) => Err(CommandError::invalid(
                "path",
                "the export is saved only where the save dialog said; choose the file again",
            )),
            None => Err(CommandError::invalid(
                "path",
                "choose where to save the export in the save dialog first (each choice saves once)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn absolute(name: &str) -> PathBuf {
        std::env::temp_dir().join(name)
    }

    fn refused_field(result: Result<PathBuf, CommandError>) -> String {
        let error = result.expect_err("refused");
        assert_eq!(error.kind(), "invalid_input", "{error}");
        serde_json::to_value(&error).unwrap()["field"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_dialogs_answer_is_accepted_once() {
        let gate = ExportPathGate::new();
        let chosen = absolute("settlement.csv");
        let shown = gate.remember(chosen.clone()).unwrap();
        assert_eq!(gate.take(Path::new(&shown)).unwrap(), chosen);
        let again = gate.take(&chosen).unwrap_err();
        assert!(again.to_string().contains("save dialog first"), "{again}");
    }

    #[test]
    fn nothing_chosen_refuses_every_path() {
        let gate = ExportPathGate::new();
        assert_eq!(refused_field(gate.take(&absolute("any.csv"))), "path");
    }

    #[test]
    fn another_path_is_refused_and_spends_the_choice() {
        let gate = ExportPathGate::new();
        let chosen = absolute("settlement.csv");
        gate.remember(chosen.clone()).unwrap();
        let other = gate.take(&absolute("elsewhere.csv")).unwrap_err();
        assert!(
            other.to_string().contains("choose the file again"),
            "{other}"
        );
        assert_eq!(refused_field(gate.take(&chosen)), "path");
    }

    #[test]
    fn a_relative_or_empty_path_is_refused() {
        let gate = ExportPathGate::new();
        gate.remember(absolute("settlement.csv")).unwrap();
        assert_eq!(
            refused_field(gate.take(Path::new("settlement.csv"))),
            "path"
        );
        gate.remember(absolute("settlement.csv")).unwrap();
        assert_eq!(refused_field(gate.take(Path::new(""))), "path");
        assert!(gate.remember(PathBuf::from("relative.csv")).is_err());
    }

    #[test]
    fn a_later_choice_replaces_an_unused_one() {
        let gate = ExportPathGate::new();
        gate.remember(absolute("first.csv")).unwrap();
        gate.remember(absolute("second.csv")).unwrap();
        assert_eq!(
            gate.take(&absolute("second.csv")).unwrap(),
            absolute("second.csv")
        );
    }
}
