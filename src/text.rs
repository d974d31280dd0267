//! Small helpers for text the operator shows (messages, labels).

/// The first 64 characters of `s`: enough of a value from outside to name it in a message.
pub fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
