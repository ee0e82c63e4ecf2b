//! Editing a definition file in place: rewriting `active`, and nothing else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use toml_edit::{Document, Item, Value};

use super::error::ServiceDefError;
use super::raw::{Issue, Loc};

/// The origin given to errors of [`set_active`], which has no file name.
const INPUT_ORIGIN: &str = "<input>";

/// Sets the top-level `active` key of a definition's TOML text to `active`.
///
/// Only the bytes of the value change: comments (including one after the
/// value on the same line), spacing, key order and everything else stay
/// byte-for-byte identical. When there is no `active` key, the line
/// `active = <bool>` is inserted right after the `name` line (or at the top
/// when there is no `name` either).
///
/// Fails when the text is not valid TOML, or when `active` is not a boolean.
///
/// ```
/// let src = "name = \"web\"  # the site\nactive=true # running\n\n[[components]]\nname = \"app\"\nimage = \"nginx\"\n";
/// let out = mcp_core::servicedef::set_active(src, false)?;
/// assert_eq!(out, src.replace("active=true", "active=false"));
/// # Ok::<(), mcp_core::servicedef::ServiceDefError>(())
/// ```
pub fn set_active(source: &str, active: bool) -> Result<String, ServiceDefError> {
    set_active_in(source, active, Path::new(INPUT_ORIGIN))
}

fn set_active_in(source: &str, active: bool, origin: &Path) -> Result<String, ServiceDefError> {
    let fail = |span: Option<std::ops::Range<usize>>, message: String| {
        ServiceDefError::from_issue(
            origin,
            source,
            Issue::new(&Loc::Span(span.unwrap_or(0..0)), message),
        )
    };
    let doc = Document::parse(source)
        .map_err(|e| fail(e.span(), format!("syntax error: {}", e.message())))?;
    let root = doc.as_table();
    let value = active.to_string();

    if let Some(item) = root.get("active") {
        return match item {
            Item::Value(Value::Boolean(b)) => match b.span() {
                Some(span) => Ok(format!(
                    "{}{value}{}",
                    &source[..span.start],
                    &source[span.end..]
                )),
                None => Err(fail(None, "cannot locate the value of \"active\"".into())),
            },
            other => Err(fail(
                other.span(),
                format!(
                    "invalid type for \"active\": expected a boolean, found {}",
                    other.type_name()
                ),
            )),
        };
    }

    let line = format!("active = {value}");
    let Some(name_end) = root.get("name").and_then(Item::span).map(|s| s.end) else {
        let eol = if source.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        return Ok(format!("{line}{eol}{source}"));
    };
    Ok(match source[name_end..].find('\n') {
        Some(i) => {
            let at = name_end + i + 1;
            let eol = if source[..at].ends_with("\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            format!("{}{line}{eol}{}", &source[..at], &source[at..])
        }
        None => format!("{source}\n{line}\n"),
    })
}

/// Rewrites the `active` key of the definition file at `path` (see
/// [`set_active`]), atomically: the new text goes to a temporary file in the
/// same directory, which is flushed to disk and renamed over the original,
/// so a crash leaves either the old or the new file. The file's permissions
/// (and, where allowed, owner) are kept; a symlink is followed and its target
/// rewritten. Nothing is written when the value is already `active`.
pub fn write_active(path: &Path, active: bool) -> Result<(), ServiceDefError> {
    let target = fs::canonicalize(path)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    let source = fs::read_to_string(&target)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    let updated = set_active_in(&source, active, path)?;
    if updated == source {
        return Ok(());
    }
    replace_file(&target, updated.as_bytes())
        .map_err(|e| ServiceDefError::io(path, "cannot write service definition", e))
}

/// Replaces `target` with `contents` atomically (temp file, fsync, rename).
fn replace_file(target: &Path, contents: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let dir = target
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy();
    let metadata = fs::metadata(target)?;

    let (tmp_path, mut tmp) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let candidate: PathBuf = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => break (candidate, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };

    let result = (|| {
        tmp.write_all(contents)?;
        tmp.set_permissions(metadata.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // Best effort: an unprivileged user cannot give files away.
            let _ = std::os::unix::fs::fchown(&tmp, Some(metadata.uid()), Some(metadata.gid()));
        }
        tmp.sync_all()?;
        drop(tmp);
        fs::rename(&tmp_path, target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    // Make the rename itself durable. Best effort: some file systems refuse
    // to sync a directory, and the new file is in place either way.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flip(src: &str, active: bool) -> String {
        set_active(src, active).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rewrites_only_the_value() {
        let cases = [
            (
                "name = \"a\"\nactive = true\n",
                "name = \"a\"\nactive = false\n",
            ),
            (
                "name = \"a\"\nactive=true # c\n",
                "name = \"a\"\nactive=false # c\n",
            ),
            (
                "# head\n\nname   =   \"a\"   # n\n\tactive   =    true#c\n\n[[components]] # x\nname = \"b\"\nimage = \"i\"\nactive_not = 1\n",
                "# head\n\nname   =   \"a\"   # n\n\tactive   =    false#c\n\n[[components]] # x\nname = \"b\"\nimage = \"i\"\nactive_not = 1\n",
            ),
            (
                "active = true\r\nname = \"a\"\r\n",
                "active = false\r\nname = \"a\"\r\n",
            ),
            (
                "name = \"a\"\n\"active\" = true\n",
                "name = \"a\"\n\"active\" = false\n",
            ),
            (
                "name = \"a\"\nactive = true",
                "name = \"a\"\nactive = false",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(flip(src, false), want, "{src:?}");
            // And back again.
            assert_eq!(flip(want, true), src, "{want:?}");
        }
    }

    #[test]
    fn same_value_is_unchanged() {
        let src = "name = \"a\"\nactive   =   false   # off\n";
        assert_eq!(flip(src, false), src);
    }

    #[test]
    fn does_not_touch_active_in_tables() {
        let src = "name = \"a\"\nactive = true\n\n[[components]]\nname = \"b\"\nimage = \"i\"\n\n[x]\nactive = true\n";
        let out = flip(src, false);
        assert_eq!(out, src.replacen("active = true", "active = false", 1));
    }

    #[test]
    fn inserts_after_the_name_line() {
        assert_eq!(
            flip("# c\nname = \"a\" # n\n\n[[components]]\n", true),
            "# c\nname = \"a\" # n\nactive = true\n\n[[components]]\n"
        );
        assert_eq!(
            flip("name = \"a\"\r\nnode = \"x\"\r\n", false),
            "name = \"a\"\r\nactive = false\r\nnode = \"x\"\r\n"
        );
        assert_eq!(
            flip("name = \"a\"", false),
            "name = \"a\"\nactive = false\n"
        );
        assert_eq!(
            flip(
                "node = \"n\"\nname = \"\"\"\nx\"\"\"\ntier = \"core\"\n",
                true
            ),
            "node = \"n\"\nname = \"\"\"\nx\"\"\"\nactive = true\ntier = \"core\"\n"
        );
        assert_eq!(
            flip("node = \"n\"\n", true),
            "active = true\nnode = \"n\"\n"
        );
        let out = flip("name = \"a\"\n", true);
        assert!(toml_edit::Document::parse(out.as_str()).is_ok());
    }

    #[test]
    fn refuses_bad_input() {
        let err = set_active("name = \"a\"\nactive = \"yes\"\n", true).expect_err("not a bool");
        assert_eq!((err.line(), err.col()), (Some(2), Some(10)));
        assert!(err.message().contains("expected a boolean"), "{err}");
        assert!(err.to_string().starts_with("<input>:2:10: "), "{err}");

        let err = set_active("name = \"a\nactive = true\n", true).expect_err("syntax");
        assert_eq!(err.line(), Some(1));
        assert!(err.message().starts_with("syntax error"), "{err}");
    }

    #[test]
    fn write_active_is_atomic_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("svc.toml");
        let src = "name = \"svc\" # keep\nactive = true  # state\n\n[[components]]\nname = \"a\"\nimage = \"i\"\n";
        fs::write(&path, src).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");

        write_active(&path, false).expect("write_active");
        let got = fs::read_to_string(&path).expect("read");
        assert_eq!(got, src.replace("active = true", "active = false"));
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["svc.toml"], "no temporary file left behind");

        // Through a symlink: the target is rewritten, the link stays a link.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        write_active(&link, true).expect("write_active via link");
        assert_eq!(fs::read_to_string(&path).expect("read"), src);
        assert!(
            fs::symlink_metadata(&link)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );

        let err = write_active(&dir.path().join("missing.toml"), true).expect_err("missing");
        assert!(err.is_io());
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }
}
