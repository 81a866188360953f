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
        trial("specs::from-dir-equals-bundled", || {
            let dir = gcmspec::bundled::catalog_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"))
                .map_err(|e| e.to_string())?;
            let bundled = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
            let ids = |c: &gcmspec::spec::Catalog| c.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
            if ids(&dir) == ids(&bundled) { Ok(()) } else { Err("rule lists differ".into()) }
        }),
    ]
}
