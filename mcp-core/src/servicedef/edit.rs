//! Editing a definition file in place: rewriting `active`, or one
//! component's `image`, and nothing else.

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
    let fail = |span, message| located(origin, source, span, message);
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
    rewrite_file(path, |source| set_active_in(source, active, path)).map(|_| ())
}

/// Sets the `image` of the component called `component` in a definition's
/// TOML text, changing only the bytes of that value (see [`set_active`]).
///
/// The result must still be a valid definition: an image reference that
/// the format refuses is an error, as is a component that does not exist
/// or has no `image` key.
///
/// ```
/// let src = "name = \"web\"\n\n[[components]]\nname = \"app\"\nimage = \"nginx:1.26\" # pinned\n";
/// let out = mcp_core::servicedef::set_image(src, "app", "nginx:1.27")?;
/// assert_eq!(out, src.replace("1.26", "1.27"));
/// # Ok::<(), mcp_core::servicedef::ServiceDefError>(())
/// ```
pub fn set_image(source: &str, component: &str, image: &str) -> Result<String, ServiceDefError> {
    set_image_in(source, component, image, Path::new(INPUT_ORIGIN))
}

/// Rewrites one component's `image` in the definition file at `path` (see
/// [`set_image`]), atomically and keeping the file's permissions, like
/// [`write_active`]. Returns whether the file changed.
pub fn write_image(path: &Path, component: &str, image: &str) -> Result<bool, ServiceDefError> {
    rewrite_file(path, |source| set_image_in(source, component, image, path))
}

fn set_image_in(
    source: &str,
    component: &str,
    image: &str,
    origin: &Path,
) -> Result<String, ServiceDefError> {
    let fail = |span, message| located(origin, source, span, message);
    let doc = Document::parse(source)
        .map_err(|e| fail(e.span(), format!("syntax error: {}", e.message())))?;
    let root = doc.as_table();
    // Each component as (its span, its name, the span of its image value).
    type Found = (Option<std::ops::Range<usize>>, Option<String>, Option<Item>);
    let mut components: Vec<Found> = Vec::new();
    match root.get("components") {
        Some(Item::ArrayOfTables(tables)) => {
            for t in tables.iter() {
                components.push((
                    t.span(),
                    t.get("name").and_then(Item::as_str).map(str::to_string),
                    t.get("image").cloned(),
                ));
            }
        }
        Some(Item::Value(Value::Array(array))) => {
            for v in array.iter() {
                if let Some(t) = v.as_inline_table() {
                    components.push((
                        t.span(),
                        t.get("name").and_then(Value::as_str).map(str::to_string),
                        t.get("image").cloned().map(Item::Value),
                    ));
                }
            }
        }
        _ => {}
    }
    let Some((span, _, image_item)) = components
        .iter()
        .find(|(_, name, _)| name.as_deref() == Some(component))
    else {
        let known: Vec<&str> = components
            .iter()
            .filter_map(|(_, n, _)| n.as_deref())
            .collect();
        return Err(fail(
            None,
            format!(
                "no component {component:?} (components: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let value_span = match image_item {
        Some(Item::Value(v @ Value::String(_))) => v.span(),
        Some(other) => {
            return Err(fail(
                other.span(),
                format!(
                    "invalid type for \"image\": expected a string, found {}",
                    other.type_name()
                ),
            ));
        }
        None => {
            return Err(fail(
                span.clone(),
                format!("component {component:?} has no \"image\" key to change"),
            ));
        }
    };
    let Some(value_span) = value_span else {
        return Err(fail(None, "cannot locate the value of \"image\"".into()));
    };
    let literal = Value::from(image).to_string();
    let updated = format!(
        "{}{}{}",
        &source[..value_span.start],
        literal.trim(),
        &source[value_span.end..]
    );
    // The new reference must be one the format accepts.
    super::parse(&updated, origin)?;
    Ok(updated)
}

/// An error at `span` of `source` (its start when unknown).
fn located(
    origin: &Path,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    message: String,
) -> ServiceDefError {
    ServiceDefError::from_issue(
        origin,
        source,
        Issue::new(&Loc::Span(span.unwrap_or(0..0)), message),
    )
}

/// Reads the definition file at `path` (following a symlink), applies
/// `edit` to its text and, when that changed anything, replaces the file
/// atomically. Returns whether it changed.
fn rewrite_file(
    path: &Path,
    edit: impl FnOnce(&str) -> Result<String, ServiceDefError>,
) -> Result<bool, ServiceDefError> {
    let target = fs::canonicalize(path)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    let source = fs::read_to_string(&target)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    let updated = edit(&source)?;
    if updated == source {
        return Ok(false);
    }
    replace_file(&target, updated.as_bytes())
        .map_err(|e| ServiceDefError::io(path, "cannot write service definition", e))?;
    Ok(true)
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
    fn set_image_rewrites_one_components_image() {
        let src = "name = \"web\"\n\n[[components]]\nname = \"app\"\nimage = 'reg:5000/app:1.4'   # pinned\n\n[[components]]\nname = \"db\"\nimage = \"reg:5000/db:1\"\n";
        let out = set_image(src, "db", "reg:5000/db:2").expect("set_image");
        assert_eq!(out, src.replace("db:1", "db:2"));
        let out = set_image(src, "app", "reg:5000/app:1.5").expect("set_image");
        assert_eq!(
            out,
            src.replace("'reg:5000/app:1.4'", "\"reg:5000/app:1.5\"")
        );
        let inline = "name = \"web\"\ncomponents = [{ name = \"app\", image = \"a:1\" }]\n";
        assert_eq!(
            set_image(inline, "app", "a:2").expect("inline"),
            inline.replace("a:1", "a:2")
        );
        // Unchanged when the image is already that.
        assert_eq!(set_image(src, "db", "reg:5000/db:1").expect("same"), src);
    }

    #[test]
    fn set_image_refuses_bad_input() {
        let src = "name = \"web\"\n\n[[components]]\nname = \"app\"\nimage = \"a:1\"\n";
        let err = set_image(src, "nope", "a:2").expect_err("unknown component");
        assert!(
            err.message()
                .contains("no component \"nope\" (components: app)"),
            "{err}"
        );
        let err = set_image(src, "app", "a b").expect_err("bad image");
        assert_eq!(err.line(), Some(5), "{err}");
        assert!(err.message().contains("\"a b\""), "{err}");
        let err = set_image(
            "name = \"web\"\n[[components]]\nname = \"app\"\nimage = 3\n",
            "app",
            "a:2",
        )
        .expect_err("not a string");
        assert_eq!((err.line(), err.col()), (Some(4), Some(9)), "{err}");
    }

    #[test]
    fn write_image_is_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.toml");
        let src = "name = \"web\" # keep\n\n[[components]]\nname = \"app\"\nimage = \"a:1\"\n";
        fs::write(&path, src).expect("write");
        assert!(write_image(&path, "app", "a:2").expect("write_image"));
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            src.replace("a:1", "a:2")
        );
        assert!(!write_image(&path, "app", "a:2").expect("again"));
        let err = write_image(&path, "app", "").expect_err("empty image");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:5:", path.display())),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            src.replace("a:1", "a:2"),
            "a refused edit leaves the file alone"
        );
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
