//! Any text as a config file: the key check and the loader give a
//! verdict, never a panic, and a loaded configuration validates without
//! panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if churn::config::keys::check_file("fuzz.toml", text).is_err() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("churn-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("config.toml");
    if std::fs::write(&path, text).is_ok()
        && let Ok(settings) = churn::config::Settings::load(Some(&path))
    {
        let _ = settings.validate();
    }
});
