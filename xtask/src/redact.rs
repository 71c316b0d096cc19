//! One redactor for everything the tool prints: it knows the current secret values and replaces
//! each with `<redacted>`, so a failing command that echoes a secret does not leak it.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Values shorter than this are not treated as secrets: redacting `1` or `on` everywhere would
/// garble output without protecting anything.
const MIN_LEN: usize = 6;

pub fn add(value: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

pub fn text(s: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = s.to_string();
    for v in secrets.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_known_values_longest_first() {
        super::add("abcdef123456");
        super::add("abcdef");
        super::add("x");
        assert_eq!(
            super::text("k=abcdef123456 j=abcdef x"),
            "k=<redacted> j=<redacted> x"
        );
    }
}
