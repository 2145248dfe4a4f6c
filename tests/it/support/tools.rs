//! Tools from other ecosystems that tests drive (Python, npm), installed
//! under the test target directory, never into the source tree.

use std::path::PathBuf;

/// A virtualenv under the test target dir built from `requirements` (a path
/// from the crate root); returns the venv's directory. A copy of the
/// requirements, written last, marks a complete venv that matches them, so
/// a changed pin rebuilds it. Tests run in parallel: the first to need a
/// venv builds it, the rest wait.
pub(crate) fn venv(name: &str, requirements: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let requirements = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(requirements);
    let wanted = std::fs::read_to_string(&requirements).expect("requirements");
    let stamp = dir.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_ref() != Some(&wanted) {
        let created = std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(created.success());
        let installed = std::process::Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .expect("pip install");
        assert!(
            installed.success(),
            "pip install -r {}",
            requirements.display()
        );
        std::fs::write(&stamp, wanted).expect("write stamp");
    }
    dir
}

/// A copy of the npm project `project` (a directory from the crate root)
/// under the test target dir, with `files` beside its manifest and lockfile,
/// and its locked packages installed; returns the copy's directory.
///
/// The source tree is never written: `npm install` would rewrite the
/// committed lockfile, so the copy gets `npm ci`, which only reads it, and
/// runs again only when the lockfile changed. The scripts run from the copy
/// because node resolves ES module imports from the script's own directory
/// upwards, never through NODE_PATH. A link to `proto/` keeps its place
/// relative to the copy, where the projects look for the contract.
pub(crate) fn npm_project(project: &str, files: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("npm");
    let dir = root.join(project);
    std::fs::create_dir_all(&dir).expect("npm project dir");
    let proto = root.join("proto");
    // Made anew each time: a link left by a checkout elsewhere would dangle.
    let _ = std::fs::remove_file(&proto);
    std::os::unix::fs::symlink(source.join("proto"), &proto).expect("link proto/");
    for file in ["package.json", "package-lock.json"].iter().chain(files) {
        std::fs::copy(source.join(project).join(file), dir.join(file))
            .unwrap_or_else(|error| panic!("copy {project}/{file}: {error}"));
    }
    let lockfile = std::fs::read(dir.join("package-lock.json")).expect("lockfile");
    // Inside node_modules, which `npm ci` deletes first: a failed install
    // leaves no stamp behind.
    let stamp = dir.join("node_modules/.installed-package-lock.json");
    if std::fs::read(&stamp).ok().as_ref() != Some(&lockfile) {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm ci");
        assert!(status.success(), "npm ci in {}", dir.display());
        std::fs::write(&stamp, lockfile).expect("write stamp");
    }
    dir
}
