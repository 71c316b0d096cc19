//! The one audited quoting function for remote command lines.
//!
//! OpenSSH sends a remote command as one string, which the remote user's login shell parses.
//! Every argv element therefore becomes one single-quoted POSIX shell word: inside single
//! quotes no character is special, except `'` itself, which cannot appear there and is written
//! as `'\''` (close the quote, an escaped quote, reopen). Every word is quoted, even ones that
//! look safe: a bare first word can be a reserved word (`if`), an assignment (`A=b`) or, to
//! ssh itself, an option (`-oProxyCommand=...`); a quoted word is none of these.
//!
//! This assumes a POSIX-style login shell (sh, dash, bash, zsh, ksh) on the remote side; csh
//! and fish parse quotes differently.

use anyhow::{bail, Result};

/// `word` as one POSIX shell word that the shell turns back into exactly `word`.
/// NUL cannot be part of an argv element (C strings end there), so it is an error.
pub fn quote(word: &str) -> Result<String> {
    if word.contains('\0') {
        bail!("an argument contains a NUL byte, which no command line can carry: {word:?}");
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// The shell command line that runs `argv`: each element quoted, joined by spaces.
pub fn command_line(argv: &[impl AsRef<str>]) -> Result<String> {
    if argv.is_empty() {
        bail!("empty command");
    }
    let words = argv
        .iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quotes_every_word() {
        let cases: &[(&str, &str)] = &[
            ("", "''"),
            ("plain", "'plain'"),
            ("two words", "'two words'"),
            ("it's", r"'it'\''s'"),
            ("'", r"''\'''"),
            ("''", r"''\'''\'''"),
            ("\"", "'\"'"),
            ("$HOME", "'$HOME'"),
            ("$(touch /tmp/x)", "'$(touch /tmp/x)'"),
            ("`id`", "'`id`'"),
            ("a\\b", "'a\\b'"),
            ("line\nbreak", "'line\nbreak'"),
            ("-oProxyCommand=x", "'-oProxyCommand=x'"),
            ("A=b", "'A=b'"),
            ("if", "'if'"),
            ("~", "'~'"),
            ("*", "'*'"),
            ("é€", "'é€'"),
        ];
        for (word, want) in cases {
            assert_eq!(quote(word).unwrap(), *want, "quote({word:?})");
        }
    }

    #[test]
    fn command_line_joins_quoted_words() {
        assert_eq!(
            command_line(&["docker", "ps", "--format", "{{json .}}"]).unwrap(),
            "'docker' 'ps' '--format' '{{json .}}'"
        );
        assert_eq!(command_line(&[""]).unwrap(), "''");
        let owned: Vec<String> = vec!["echo".into(), "a b".into()];
        assert_eq!(command_line(&owned).unwrap(), "'echo' 'a b'");
    }

    #[test]
    fn rejects_nul_and_empty_argv() {
        let err = quote("a\0b").unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
        assert!(command_line(&["echo", "x\0"]).is_err());
        assert!(command_line(&[] as &[&str]).is_err());
    }

    /// Strings a descriptor could hold to attack a command line, plus every ASCII character
    /// except NUL on its own and in company.
    fn hostile() -> Vec<String> {
        let mut words: Vec<String> = [
            "",
            " ",
            "$(touch /tmp/xtask-quote-pwned)",
            "`touch /tmp/xtask-quote-pwned`",
            "; rm -rf /tmp/xtask-quote-y",
            "&& touch /tmp/xtask-quote-pwned",
            "| tee /tmp/xtask-quote-pwned",
            "> /tmp/xtask-quote-pwned",
            "it's",
            "'",
            "''",
            "'\\''",
            "\"",
            "\"$HOME\"",
            "'$HOME'",
            "\\",
            "\\'",
            "a\\\nb",
            "line one\nline two",
            "\n",
            "tab\there",
            "\r\n",
            "*",
            "/*",
            "?",
            "[a-z]",
            "~",
            "~root",
            "-n",
            "-e",
            "--",
            "-oProxyCommand=touch /tmp/xtask-quote-pwned",
            "A=b",
            "if",
            "!",
            "{a,b}",
            "#comment",
            "%1",
            "é ü 日本 😀",
            "\u{7f}\u{1b}[31m",
            "${IFS}",
            "$'\\x41'",
            "trailing space ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let all: String = (1u8..128).map(char::from).collect();
        words.extend((1u8..128).map(|b| char::from(b).to_string()));
        words.push(all.clone());
        words.push(format!("'{all}'"));
        words
    }

    /// Every hostile word survives a real `sh -c` as exactly one argument, byte for byte, and
    /// nothing in it runs.
    #[test]
    fn round_trips_through_sh() {
        let words = hostile();
        // The words as arguments of printf: each printed followed by a NUL, so any change in
        // splitting or content shows up.
        let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
        argv.extend(words.iter().cloned());
        let line = command_line(&argv).unwrap();
        for shell in ["sh", "bash", "dash"] {
            if Command::new(shell).arg("-c").arg("true").output().is_err() {
                continue;
            }
            let out = Command::new(shell)
                .arg("-c")
                .arg(&line)
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {out:?}");
            let mut want = Vec::new();
            for w in &words {
                want.extend_from_slice(w.as_bytes());
                want.push(0);
            }
            assert_eq!(
                out.stdout, want,
                "{shell} did not give back the words exactly"
            );
            assert!(
                out.stderr.is_empty(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(!std::path::Path::new("/tmp/xtask-quote-pwned").exists());
    }

    /// Property-style: many random words drawn from the characters that mean something to a
    /// shell (plus non-ASCII and control characters), with a fixed seed so a failure repeats.
    #[test]
    fn random_words_round_trip() {
        let alphabet: Vec<char> = "'\"\\`$(){}[]<>|&;*?~#!%=-+ \t\n\r^@:,./aZ0é日😀\u{1}\u{7f}"
            .chars()
            .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _round in 0..20 {
            let words: Vec<String> = (0..50)
                .map(|_| {
                    let len = (next() % 24) as usize;
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
            argv.extend(words.iter().cloned());
            let line = command_line(&argv).unwrap();
            let out = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap();
            let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
            // printf ends each word with a NUL, so the split ends with one empty piece.
            assert_eq!(got.len(), words.len() + 1, "{line:?}");
            for (w, g) in words.iter().zip(&got) {
                assert_eq!(w.as_bytes(), *g, "{line:?}");
            }
        }
    }

    /// One word at a time too, so a word that only misbehaves first in a line is caught.
    #[test]
    fn each_word_round_trips_alone() {
        for w in hostile() {
            let line = command_line(&["printf", "%s\\0", &w]).unwrap();
            let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
            let mut want = w.as_bytes().to_vec();
            want.push(0);
            assert_eq!(out.stdout, want, "word {w:?} via {line:?}");
        }
        // As the command itself: a quoted first word is looked up as a command named exactly
        // that, never run as shell syntax.
        for w in ["$(touch /tmp/xtask-quote-pwned)", "A=b", "if", "-x"] {
            let line = command_line(&[w]).unwrap();
            let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
            assert_eq!(out.status.code(), Some(127), "{w:?}: {out:?}");
        }
        assert!(!std::path::Path::new("/tmp/xtask-quote-pwned").exists());
    }
}
