//! Spec files: bad ones are reported in full; the bundled ones are all of specs/.

use std::path::Path;

use libtest_mimic::Trial;

use crate::trial;

const BAD: &str = r#"
[[rule]]
id = "group.bad"
title = "bad"
level = "must"
source = { document = "000_63227b9e89e6b167.txt", section = "Add Registration IDs", quote = "The maximum number of members is 99." }
[[rule.check]]
name = "x"
[[rule.check.step]]
request = "POST /gcm/notification"
body = { registration_ids = "${nobody}" }
expect = { status = 200, fields = [{ at = "/a", eqq = 1 }] }

[[rule]]
id = "group.bad-too"
title = "no checks"
level = "sometimes"
source = { document = "nowhere", section = "x", quote = "y" }
"#;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("specs::every-error-at-once-with-file-line-field", || {
            let dir = std::env::temp_dir().join(format!("gcmspec-specs-{}", std::process::id()));
            let sources = dir.join("sources");
            std::fs::create_dir_all(&sources).map_err(|e| e.to_string())?;
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
            for f in ["documents.toml", "profiles.toml"] {
                std::fs::copy(root.join(f), dir.join(f)).map_err(|e| e.to_string())?;
            }
            for entry in std::fs::read_dir(root.join("sources")).map_err(|e| e.to_string())? {
                let p = entry.map_err(|e| e.to_string())?.path();
                std::fs::copy(&p, sources.join(p.file_name().unwrap_or_default())).map_err(|e| e.to_string())?;
            }
            std::fs::write(dir.join("bad.toml"), BAD).map_err(|e| e.to_string())?;
            let result = gcmspec::bundled::catalog_from_dir(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            let text = match result {
                Ok(_) => return Err("a bad spec file loaded".into()),
                Err(e) => e.to_string(),
            };
            let bad = dir.join("bad.toml").display().to_string();
            for needle in [
                format!("{bad}:6: rule[group.bad].source.quote: not found verbatim"),
                format!("{bad}:11: rule[group.bad].check[x].step[1].body: `nobody` is not defined"),
                format!("{bad}:12: rule[group.bad].check[x].step[1].expect.fields[0].eqq: unknown check"),
                format!("{bad}:17: rule[group.bad-too].level"),
                format!("{bad}:18: rule[group.bad-too].source.document: unknown document `nowhere`"),
                "rule[group.bad-too]: missing `[[rule.check]]`".to_string(),
            ] {
                if !text.contains(&needle) {
                    return Err(format!("missing {needle:?} in:\n{text}"));
                }
            }
            Ok(())
        }),
        trial("specs::bundled-files-are-all-of-specs-dir", || {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut on_disk: Vec<String> = Vec::new();
            for dir in ["specs", "specs/sources"] {
                for e in std::fs::read_dir(root.join(dir)).map_err(|e| e.to_string())? {
                    let p = e.map_err(|e| e.to_string())?.path();
                    let name = format!("{dir}/{}", p.file_name().unwrap_or_default().to_string_lossy());
                    if p.is_file() && (dir == "specs/sources" || name.ends_with(".toml")) {
                        on_disk.push(name);
                    }
                }
            }
            let mut bundled: Vec<String> = gcmspec::bundled::SPEC_FILES
                .iter()
                .chain(gcmspec::bundled::SOURCE_FILES)
                .map(|(n, _)| n.to_string())
                .collect();
            on_disk.sort();
            bundled.sort();
            if on_disk == bundled {
                Ok(())
            } else {
                Err(format!("specs/ holds {on_disk:?}\nthe binary bundles {bundled:?}"))
            }
        }),
        trial("specs::mutated-spec-files-load-or-say-where", mutated_specs_load_or_say_where),
        trial("specs::from-dir-equals-bundled", || {
            let dir = gcmspec::bundled::catalog_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"))
                .map_err(|e| e.to_string())?;
            let bundled = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
            let ids = |c: &gcmspec::catalog::Catalog| c.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
            if ids(&dir) == ids(&bundled) { Ok(()) } else { Err("rule lists differ".into()) }
        }),
    ]
}

/// The bundled spec files with random edits (bytes replaced, inserted, removed; lines doubled
/// or dropped) load into a catalogue or fail with errors that each name a file, a line in it
/// and a field; never a panic.
fn mutated_specs_load_or_say_where() -> Result<(), String> {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let sources: std::collections::BTreeMap<String, String> = gcmspec::bundled::SOURCE_FILES
        .iter()
        .map(|(n, t)| (n.rsplit('/').next().unwrap_or(n).to_string(), t.to_string()))
        .collect();
    let files: Vec<(String, String)> =
        gcmspec::bundled::SPEC_FILES.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    let edits = proptest::collection::vec((0..files.len(), 0usize..100_000, 0u8..5, any::<u8>()), 1..6);
    // Each case loads every file and checks every quote: 40 keep this near five seconds.
    let config = Config { cases: 40, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    runner
        .run(&edits, |edits| {
            let mut files = files.clone();
            for (f, at, how, b) in edits {
                let mut bytes = files[f].1.clone().into_bytes();
                let at = at % (bytes.len() + 1);
                let line_start = bytes[..at].iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
                let line_end = bytes[at..].iter().position(|c| *c == b'\n').map_or(bytes.len(), |i| at + i + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = b"=[]{}\"'#,.$\n0a"[usize::from(b) % 14],
                    1 => bytes.insert(at, b),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    3 => {
                        let line = bytes[line_start..line_end].to_vec();
                        bytes.splice(line_start..line_start, line);
                    }
                    _ => {
                        bytes.drain(line_start..line_end);
                    }
                }
                files[f].1 = String::from_utf8_lossy(&bytes).into_owned();
            }
            match std::panic::catch_unwind(|| gcmspec::catalog::load(&files, &sources)) {
                Err(_) => Err(TestCaseError::fail("the loader panicked")),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(errors)) => {
                    for e in &errors.0 {
                        let lines = files.iter().find(|(n, _)| *n == e.file).map(|(_, t)| t.lines().count() + 1);
                        let line_ok = lines.is_some_and(|n| e.line >= 1 && e.line <= n);
                        if !line_ok || e.field.is_empty() || e.message.is_empty() {
                            return Err(TestCaseError::fail(format!("an error that does not say where: {e}")));
                        }
                    }
                    if errors.0.is_empty() {
                        return Err(TestCaseError::fail("failed with no error"));
                    }
                    Ok(())
                }
            }
        })
        .map_err(|e| e.to_string())
}
