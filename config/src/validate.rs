//! Validation errors: every problem found, each with the key it is about.

use std::fmt;

/// One problem in a configuration, located by its key path
/// (for example `service[1].limits.cpu_budget_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found in one configuration. Never empty when returned as an
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(
            f,
            "{count} configuration error{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Checks that `value` lies in `min..=max`, recording a problem otherwise.
    pub fn check_range<T>(&mut self, path: impl Into<String>, value: T, min: T, max: T)
    where
        T: PartialOrd + fmt::Display,
    {
        if value < min || value > max {
            self.push(
                path,
                format!("{value} is outside the allowed range {min}..={max}"),
            );
        }
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// Checks fields of a config section against their allowed ranges, as
/// [`ConfigErrors::check_range`] does, in order, each problem at
/// `path.field`:
///
/// ```ignore
/// check_ranges!(errors, path, self, {
///     max_header_count: 1..=1_000,
///     retry_above_connections: 0..=self.max_connections,
/// });
/// ```
///
/// The key a problem names is the field's own name, so the two cannot
/// drift apart, and a section's bounds read as one table.
macro_rules! check_ranges {
    ($errors:expr, $path:expr, $section:expr, { $($field:ident: $range:expr),* $(,)? }) => {
        $({
            let range = $range;
            $errors.check_range(
                format!("{}.{}", $path, stringify!($field)),
                $section.$field,
                *range.start(),
                *range.end(),
            );
        })*
    };
}
pub(crate) use check_ranges;

/// Service names appear in metric labels and URLs: keep them short and plain.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid service name: use 1-63 characters from a-z, 0-9, '-' and '_'"
        ))
    }
}
