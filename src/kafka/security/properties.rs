//! The two text formats Kafka users already write their client settings in: Java properties
//! files (what `--command-config` names, as for Kafka's own tools) and the one JAAS login
//! module line of `sasl.jaas.config`. Values are kept as `Secret`s from the moment they are
//! read, so a password cannot reach a log line through a parse error or a `{:?}`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Secret;

/// Where a setting came from, for the one line that says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: usize },
    Env { name: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env { name } => write!(f, "environment variable {name}"),
        }
    }
}

/// One `key=value` of a properties file (or one environment variable).
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: Secret,
    pub origin: Origin,
}

/// A properties file that does not parse: where, and why (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct SyntaxError {
    pub origin: Origin,
    pub reason: String,
}

/// Parses `text` as a Java properties file (`java.util.Properties.load`): `key=value`,
/// `key: value` or `key value`; `#` and `!` comment lines; a backslash at the end of a line
/// continues it on the next; `\t`, `\n`, `\uXXXX` and `\\` escapes. A key given twice keeps
/// its last value, as Java does.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Entry>, SyntaxError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: index + 1,
        };
        let trimmed = first.trim_start_matches([' ', '\t', '\x0c']);
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of backslashes at the end escapes the newline.
        let mut logical = String::from(trimmed);
        while ends_in_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches([' ', '\t', '\x0c'])),
                None => break,
            }
        }
        let (raw_key, raw_value) = split_key(&logical);
        let key = unescape(raw_key).map_err(|reason| SyntaxError {
            origin: origin.clone(),
            reason: format!("{reason} in a key"),
        })?;
        let value = unescape(raw_value).map_err(|reason| SyntaxError {
            origin: origin.clone(),
            // Never the value: it may be a password.
            reason: format!("{reason} in the value of {key}"),
        })?;
        entries.retain(|e| e.key != key);
        entries.push(Entry {
            key,
            value: Secret::new(value),
            origin,
        });
    }
    Ok(entries)
}

fn ends_in_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// The raw key and raw value of one logical line: the key ends at the first unescaped `=`,
/// `:` or white space; then white space, at most one `=` or `:`, and white space again.
fn split_key(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, '=' | ':' | ' ' | '\t' | '\x0c') {
            end = i;
            break;
        }
    }
    let key = &line[..end];
    let mut rest = line[end..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or("a malformed \\uXXXX escape")?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// The login module of a `sasl.jaas.config`, and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jaas {
    /// The class, e.g. `org.apache.kafka.common.security.scram.ScramLoginModule`.
    pub module: String,
    pub options: BTreeMap<String, Secret>,
}

pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
pub const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

/// Parses the one login module Kafka accepts in `sasl.jaas.config`:
/// `Class required username="alice" password="secret";`. Option values are quoted (with `\"`
/// and `\\` escapes) or bare words; the flag (required, requisite, sufficient, optional) is
/// checked and otherwise ignored, as Kafka does for a single module.
pub fn parse_jaas(text: &str) -> Result<Jaas, String> {
    let mut tokens = JaasTokens { rest: text.trim() };
    let module = match tokens.next()? {
        Some(JaasToken::Word(word)) => word,
        _ => return Err("it should start with the login module's class name".into()),
    };
    match tokens.next()? {
        Some(JaasToken::Word(flag))
            if ["required", "requisite", "sufficient", "optional"]
                .contains(&flag.to_ascii_lowercase().as_str()) => {}
        _ => {
            return Err(format!(
                "the class name {module} should be followed by a flag such as `required`"
            ));
        }
    }
    let mut options = BTreeMap::new();
    loop {
        match tokens.next()? {
            Some(JaasToken::Semicolon) => break,
            Some(JaasToken::Word(name)) => {
                if tokens.next()? != Some(JaasToken::Equals) {
                    return Err(format!("option {name} should be written {name}=\"...\""));
                }
                let value = match tokens.next()? {
                    Some(JaasToken::Word(v) | JaasToken::Quoted(v)) => v,
                    // Never the value: it may be a password.
                    _ => return Err(format!("option {name} has no value")),
                };
                options.insert(name, Secret::new(value));
            }
            Some(_) => return Err("expected an option name".into()),
            None => return Err("it should end with `;`".into()),
        }
    }
    if tokens.next()?.is_some() {
        return Err("only one login module may be given (text follows the `;`)".into());
    }
    Ok(Jaas { module, options })
}

#[derive(Debug, PartialEq, Eq)]
enum JaasToken {
    Word(String),
    Quoted(String),
    Equals,
    Semicolon,
}

struct JaasTokens<'a> {
    rest: &'a str,
}

impl JaasTokens<'_> {
    fn next(&mut self) -> Result<Option<JaasToken>, String> {
        self.rest = self.rest.trim_start();
        let mut chars = self.rest.char_indices();
        let Some((_, first)) = chars.next() else {
            return Ok(None);
        };
        let token = match first {
            '=' => {
                self.rest = &self.rest[1..];
                JaasToken::Equals
            }
            ';' => {
                self.rest = &self.rest[1..];
                JaasToken::Semicolon
            }
            '"' => {
                let mut value = String::new();
                let mut escaped = false;
                let mut end = None;
                for (i, c) in chars {
                    if escaped {
                        value.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = Some(i);
                        break;
                    } else {
                        value.push(c);
                    }
                }
                let end = end.ok_or("a quoted value is not closed with `\"`")?;
                self.rest = &self.rest[end + 1..];
                JaasToken::Quoted(value)
            }
            _ => {
                let end = self
                    .rest
                    .find(|c: char| c.is_whitespace() || c == '=' || c == ';' || c == '"')
                    .unwrap_or(self.rest.len());
                let word = self.rest[..end].to_string();
                self.rest = &self.rest[end..];
                JaasToken::Word(word)
            }
        };
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse(text, Path::new("client.properties"))
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value.expose().to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values_are_read_as_java_reads_them() {
        let text = "# a comment\n\
                    ! another\n\
                    \n\
                    security.protocol=SASL_SSL\n\
                    sasl.mechanism : SCRAM-SHA-512\n\
                    \tsasl.username   alice\n\
                    ssl.endpoint.identification.algorithm=\n\
                    ssl.ca.location=/etc/kafka/ca.pem  \n";
        assert_eq!(
            parsed(text),
            pairs(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "alice"),
                ("ssl.endpoint.identification.algorithm", ""),
                // Java keeps trailing white space in a value.
                ("ssl.ca.location", "/etc/kafka/ca.pem  "),
            ])
        );
    }

    #[test]
    fn escapes_continuations_and_repeats() {
        let text = "sasl.password=p\\u00e4ss\\\\word\\=x\n\
                    sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \\\n\
                    \x20   required username=\"bob\" \\\n\
                    \x20   password=\"s3cr=t\";\n\
                    key\\ with\\ spaces = v\n\
                    sasl.username=first\n\
                    sasl.username=second\n\
                    ends.in.backslash=a\\\\\n\
                    next=b";
        assert_eq!(
            parsed(text),
            pairs(&[
                ("sasl.password", "päss\\word=x"),
                (
                    "sasl.jaas.config",
                    "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"bob\" password=\"s3cr=t\";"
                ),
                ("key with spaces", "v"),
                ("sasl.username", "second"),
                ("ends.in.backslash", "a\\"),
                ("next", "b"),
            ])
        );
    }

    #[test]
    fn a_bad_escape_names_the_line_and_key_never_the_value() {
        let error = parse(
            "a=1\nsasl.password=hunter2\\u12",
            Path::new("/etc/client.properties"),
        )
        .unwrap_err();
        let line = error.to_string();
        assert_eq!(
            line,
            "/etc/client.properties line 2: a malformed \\uXXXX escape in the value of sasl.password"
        );
        assert!(!line.contains("hunter2"));
    }

    #[test]
    fn entries_remember_where_they_came_from() {
        let entries = parse("\n\nsasl.username=u\n", Path::new("c.properties")).unwrap();
        assert_eq!(
            entries[0].origin.to_string(),
            "c.properties line 3",
            "one-based lines"
        );
    }

    fn jaas(text: &str) -> (String, Vec<(String, String)>) {
        let parsed = parse_jaas(text).unwrap();
        let options = parsed
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        (parsed.module, options)
    }

    #[test]
    fn jaas_lines_of_the_plain_and_scram_modules() {
        assert_eq!(
            jaas(
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="al;ce \"quoted\" \\ pass";"#
            ),
            (
                SCRAM_LOGIN_MODULE.to_string(),
                pairs(&[
                    ("password", r#"al;ce "quoted" \ pass"#),
                    ("username", "alice")
                ])
            )
        );
        assert_eq!(
            jaas(&format!(
                "  {PLAIN_LOGIN_MODULE}   REQUIRED\n  username=bob\n  password = \"x y\" ;  "
            )),
            (
                PLAIN_LOGIN_MODULE.to_string(),
                pairs(&[("password", "x y"), ("username", "bob")])
            )
        );
    }

    #[test]
    fn broken_jaas_lines_say_what_is_wrong_without_the_password() {
        let cases = [
            ("", "class name"),
            (SCRAM_LOGIN_MODULE, "flag"),
            (
                &format!("{SCRAM_LOGIN_MODULE} required username=\"a\""),
                "end with `;`",
            ),
            (
                &format!("{SCRAM_LOGIN_MODULE} required password=\"hunter2;"),
                "not closed",
            ),
            (
                &format!("{SCRAM_LOGIN_MODULE} required password;"),
                "password=\"...\"",
            ),
            (
                &format!("{SCRAM_LOGIN_MODULE} required password=\"hunter2\"; Other required;"),
                "only one",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_jaas(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
