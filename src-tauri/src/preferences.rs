//! What the console remembers between starts: the last server URL and the language, in a small
//! JSON file in the app's config folder. Never the token (that lives in the OS keyring).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CommandError;

/// The languages the UI speaks.
pub const LANGUAGES: &[&str] = &["en", "ar"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// The normalised URL of the last server connected to.
    pub server_url: Option<String>,
    /// `en` or `ar`.
    pub language: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            server_url: None,
            language: "en".to_string(),
        }
    }
}

/// The preferences file; a missing or unreadable one means the defaults (it holds nothing that
/// cannot be typed again).
#[derive(Debug, Clone)]
pub struct PreferencesFile {
    path: PathBuf,
}

impl PreferencesFile {
    pub fn new(path: PathBuf) -> PreferencesFile {
        PreferencesFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Preferences {
        std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Preferences>(&bytes).ok())
            .filter(|preferences| LANGUAGES.contains(&preferences.language.as_str()))
            .unwrap_or_default()
    }

    /// Writes the whole file through a temporary file and a rename: never half-written.
    pub fn save(&self, preferences: &Preferences) -> Result<(), CommandError> {
        let failed = |error: std::io::Error| {
            CommandError::Internal(format!(
                "could not save the preferences to {}: {error}",
                self.path.display()
            ))
        };
        let folder = self
            .path
            .parent()
            .ok_or_else(|| CommandError::Internal("the preferences path has no folder".into()))?;
        std::fs::create_dir_all(folder).map_err(failed)?;
        let json = serde_json::to_vec_pretty(preferences)
            .map_err(|error| CommandError::Internal(error.to_string()))?;
        let mut file = tempfile::NamedTempFile::new_in(folder).map_err(failed)?;
        std::io::Write::write_all(&mut file, &json).map_err(failed)?;
        file.persist(&self.path)
            .map_err(|error| failed(error.error))?;
        Ok(())
    }

    /// Changes one thing and saves.
    pub fn update(
        &self,
        change: impl FnOnce(&mut Preferences),
    ) -> Result<Preferences, CommandError> {
        let mut preferences = self.load();
        change(&mut preferences);
        self.save(&preferences)?;
        Ok(preferences)
    }
}

/// Checks a language code from the UI.
pub fn language(code: &str) -> Result<String, CommandError> {
    if LANGUAGES.contains(&code) {
        Ok(code.to_string())
    } else {
        Err(CommandError::invalid(
            "language",
            format!("{code:?} is not one of {}", LANGUAGES.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_survive_a_restart_and_bad_files_mean_defaults() {
        let folder = tempfile::tempdir().unwrap();
        let file = PreferencesFile::new(folder.path().join("nested").join("preferences.json"));
        assert_eq!(file.load(), Preferences::default());
        file.update(|p| p.server_url = Some("http://127.0.0.1:8787".into()))
            .unwrap();
        file.update(|p| p.language = "ar".into()).unwrap();
        let again = PreferencesFile::new(file.path().to_path_buf()).load();
        assert_eq!(again.server_url.as_deref(), Some("http://127.0.0.1:8787"));
        assert_eq!(again.language, "ar");
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains("stl_"), "{text}");

        std::fs::write(file.path(), b"{not json").unwrap();
        assert_eq!(file.load(), Preferences::default());
        std::fs::write(file.path(), br#"{"language":"fr"}"#).unwrap();
        assert_eq!(file.load(), Preferences::default());
    }

    #[test]
    fn only_known_languages_are_accepted() {
        assert_eq!(language("ar").unwrap(), "ar");
        let error = language("fr").unwrap_err();
        assert_eq!(error.to_string(), "language: \"fr\" is not one of en, ar");
    }
}
