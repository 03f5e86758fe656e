//! Which local executable plays which container image. There is no container runtime here:
//! an image is a name for a set of programs on this machine. A pod whose image is not in the
//! table fails like a pull from a registry that does not have it.

use std::path::{Path, PathBuf};

/// What an image provides: its entrypoint and the directories its `PATH` searches.
#[derive(Clone, Debug)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub path: Vec<PathBuf>,
}

/// Image repository (no registry `docker.io/library/`, no tag or digest) → [`Image`].
#[derive(Clone, Debug)]
pub struct ImageTable {
    entries: Vec<(String, Image)>,
}

const SYSTEM_PATH: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"];

fn system_path() -> Vec<PathBuf> {
    SYSTEM_PATH.iter().map(PathBuf::from).collect()
}

impl Default for ImageTable {
    /// `python` (python3) and `busybox` (sh) for test pods.
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
        .with(
            "python",
            Image {
                entrypoint: vec!["python3".into()],
                path: system_path(),
            },
        )
        .with(
            "busybox",
            Image {
                entrypoint: vec!["sh".into()],
                path: system_path(),
            },
        )
    }
}

impl ImageTable {
    /// Adds (or replaces) an image.
    pub fn with(mut self, repository: &str, image: Image) -> Self {
        self.entries.retain(|(name, _)| name != repository);
        self.entries.push((repository.to_string(), image));
        self
    }

    /// pgha's images (`pgha/postgres`, `pgha/operator`) → the given `pgha` binary, with the
    /// machine's Postgres 15 programs on the `PATH`, as in images/.
    pub fn with_pgha(self, pgha: &Path) -> Self {
        let mut path = vec![pgha.parent().unwrap_or(Path::new("/")).to_path_buf()];
        path.push("/usr/lib/postgresql/15/bin".into());
        path.extend(system_path());
        let image = Image {
            entrypoint: vec![pgha.display().to_string()],
            path,
        };
        self.with("pgha/postgres", image.clone())
            .with("pgha/operator", image)
    }

    pub fn resolve(&self, image: &str) -> Option<&Image> {
        let repository = repository(image);
        self.entries
            .iter()
            .find(|(name, _)| name == repository)
            .map(|(_, image)| image)
    }

    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }
}

/// `docker.io/library/python:3.11@sha256:…` → `python`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let image = match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image)
}

impl Image {
    /// The program and arguments a container runs, by Kubernetes' rules: `command` replaces
    /// the entrypoint, `args` follow. A bare program name is looked up in the image's `PATH`.
    pub fn argv(&self, command: &[String], args: &[String]) -> Result<Vec<String>, String> {
        let mut argv: Vec<String> = if command.is_empty() {
            self.entrypoint.clone()
        } else {
            command.to_vec()
        };
        argv.extend(args.iter().cloned());
        let Some(program) = argv.first() else {
            return Err("no command: the image has no entrypoint and the container none".into());
        };
        if !program.contains('/') {
            let found = self
                .path
                .iter()
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file());
            match found {
                Some(found) => argv[0] = found.display().to_string(),
                None => {
                    return Err(format!(
                        "exec: \"{program}\": executable file not found in $PATH"
                    ));
                }
            }
        }
        Ok(argv)
    }

    /// The `PATH` the container's processes get.
    pub fn path_env(&self) -> String {
        let dirs: Vec<String> = self.path.iter().map(|d| d.display().to_string()).collect();
        dirs.join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_drop_registry_tag_and_digest() {
        assert_eq!(repository("python"), "python");
        assert_eq!(repository("python:3.11"), "python");
        assert_eq!(repository("docker.io/library/python:3.11"), "python");
        assert_eq!(repository("pgha/postgres:15@sha256:abc"), "pgha/postgres");
        assert_eq!(
            repository("localhost:5000/pgha/operator"),
            "localhost:5000/pgha/operator"
        );
        assert_eq!(repository("localhost:5000/x:1"), "localhost:5000/x");
    }

    #[test]
    fn command_replaces_the_entrypoint_and_is_found_on_the_path() {
        let table = ImageTable::default().with_pgha(Path::new("/opt/pgha/pgha"));
        let sh = table.resolve("busybox:1.36").unwrap();
        assert_eq!(
            sh.argv(&[], &["-c".into(), "true".into()]).unwrap()[1..],
            ["-c", "true"]
        );
        assert!(sh.argv(&[], &[]).unwrap()[0].ends_with("/sh"));
        let err = sh.argv(&["no-such-program".into()], &[]).unwrap_err();
        assert!(
            err.contains("\"no-such-program\": executable file not found"),
            "{err}"
        );
        let pgha = table.resolve("pgha/postgres:15").unwrap();
        assert_eq!(
            pgha.argv(&[], &["agent".into()]).unwrap(),
            ["/opt/pgha/pgha", "agent"]
        );
        assert!(
            pgha.path_env()
                .starts_with("/opt/pgha:/usr/lib/postgresql/15/bin:")
        );
        assert!(table.resolve("nginx").is_none());
    }
}
