//! The house's layering, checked on the source: the API, the HTTP front and the engine name no
//! channel module (each channel's knowledge sits in `src/channels/` and its provider module,
//! reached through `channels::ChannelSender` and `channels::rules`), and the server's own
//! dependencies hold no load-test crate (the simulators live in `clarion-sim`, run only when
//! configured).

use std::path::{Path, PathBuf};

/// Paths that name a channel's own module (or the built-in simulator's start-up).
const CHANNEL_MODULES: &[&str] = &[
    "crate::apns",
    "channels::apns",
    "channels::off",
    "crate::fcm",
    "channels::fcm",
    "crate::webpush",
    "channels::webpush",
    "builtin_sim",
    "clarion_sim",
];

/// The layers that must stay channel-neutral.
const NEUTRAL: &[&str] = &["src/api", "src/http", "src/engine"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn api_http_and_engine_name_no_channel_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offences = Vec::new();
    let mut checked = 0;
    for layer in NEUTRAL {
        let mut files = Vec::new();
        rust_files(&root.join(layer), &mut files);
        assert!(
            !files.is_empty(),
            "{layer} has no sources: the check would pass vacuously"
        );
        for file in files {
            checked += 1;
            let text = std::fs::read_to_string(&file).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for name in CHANNEL_MODULES {
                    if code.contains(name) {
                        offences.push(format!(
                            "{}:{}: names `{name}`: {}",
                            file.strip_prefix(root).unwrap_or(&file).display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked");
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_server_depends_on_no_load_test_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let value: toml::Value = manifest.parse().expect("Cargo.toml parses");
    let deps = value["dependencies"].as_table().expect("[dependencies]");
    assert!(
        deps.contains_key("clarion-shards"),
        "the check reads the right table"
    );
    assert!(
        !deps.contains_key("clarion-loadtest"),
        "the server's [dependencies] hold clarion-loadtest: the simulators belong to clarion-sim"
    );
}
