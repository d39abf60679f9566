//! The deployment files: docker-compose.yml, mosquitto.conf, the Dockerfile, the systemd
//! units and deploy/pmon.toml. Parsed and checked against the CLI they drive; validated by
//! the real tools where this machine has them (docker-compose 1.29, mosquitto,
//! systemd-analyze), with a printed note where it does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use pmon::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

/// Commands of later releases that deployment files may already name (the compose profile
/// `web` and pmon-web.service). Once the command exists it must parse like any other.
const FUTURE_COMMANDS: [&str; 1] = ["web"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn subcommands() -> BTreeSet<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// Checks that `args` (after `pmon`) is a command line the CLI accepts, unless it names a
/// command of a later release. Returns the subcommand.
fn check_pmon_args(args: &[String], origin: &str) -> String {
    let command = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_else(|| panic!("{origin}: no pmon subcommand in {args:?}"));
    if !subcommands().contains(&command) {
        assert!(
            FUTURE_COMMANDS.contains(&command.as_str()),
            "{origin}: `pmon {command}` is not a pmon command (known: {:?})",
            subcommands()
        );
        return command;
    }
    let argv = std::iter::once("pmon".to_string()).chain(args.iter().cloned());
    if let Err(error) = Cli::try_parse_from(argv) {
        panic!(
            "{origin}: `pmon {}` does not parse: {error}",
            args.join(" ")
        );
    }
    command
}

/// Every `PMON_*` variable the CLI reads.
fn cli_env_vars() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

fn pmon_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_pmon"))
        .arg("--help")
        .output()
        .expect("pmon --help");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn listed_in_help(help: &str, command: &str) -> bool {
    help.lines()
        .any(|line| line.split_whitespace().next() == Some(command))
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> Yaml {
    let text = read("docker-compose.yml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|v| {
            v.iter()
                .map(|y| match y {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("expected a string, got {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn keys(yaml: &Yaml) -> Vec<String> {
    yaml.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_has_the_services_volumes_ports_and_devices() {
    let doc = compose();
    // Compose file format 3.8: what Debian's docker-compose 1.29 and compose v2 both accept.
    assert_eq!(doc["version"].as_str(), Some("3.8"));
    let services = &doc["services"];
    assert_eq!(keys(services), ["broker", "acquire", "historian", "web"]);

    let broker = &services["broker"];
    assert_eq!(broker["image"].as_str(), Some("eclipse-mosquitto:2"));
    assert_eq!(strings(&broker["ports"]), ["1883:1883"]);
    let volumes = strings(&broker["volumes"]);
    assert!(volumes.contains(&"./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro".into()));
    assert!(volumes.contains(&"mosquitto-data:/mosquitto/data".into()));

    let acquire = &services["acquire"];
    assert_eq!(strings(&acquire["devices"]), ["/dev/i2c-1:/dev/i2c-1"]);
    assert_eq!(strings(&acquire["group_add"]), ["${I2C_GID:-998}"]);
    assert!(strings(&acquire["volumes"]).contains(&"acquire-data:/var/lib/pmon".into()));
    assert!(
        acquire["ports"].is_badvalue(),
        "the acquisition serves nothing"
    );

    let historian = &services["historian"];
    assert_eq!(strings(&historian["ports"]), ["8081:8081"]);
    assert!(strings(&historian["volumes"]).contains(&"historian-data:/var/lib/pmon".into()));
    assert!(historian["devices"].is_badvalue());

    let web = &services["web"];
    assert_eq!(
        strings(&web["profiles"]),
        ["web"],
        "off until the release with `pmon web`"
    );
    assert_eq!(strings(&web["ports"]), ["8080:8080"]);

    // Named volumes: each used one declared, each declared one used, one per stateful service.
    let declared: BTreeSet<String> = keys(&doc["volumes"]).into_iter().collect();
    let mut used = BTreeSet::new();
    for name in keys(services) {
        for volume in strings(&services[name.as_str()]["volumes"]) {
            let source = volume.split(':').next().unwrap_or("").to_string();
            if source.starts_with("./") {
                assert!(
                    repo().join(&source).exists(),
                    "{name}: bind-mounted {source} does not exist"
                );
            } else {
                assert!(
                    declared.contains(&source),
                    "{name}: volume {source} is not declared"
                );
                used.insert(source);
            }
        }
    }
    assert_eq!(used, declared, "declared volumes nobody uses");
    assert_eq!(
        declared,
        BTreeSet::from([
            "acquire-data".into(),
            "historian-data".into(),
            "mosquitto-data".into()
        ])
    );
}

#[test]
fn every_compose_service_restarts_reports_its_health_and_rotates_logs() {
    let doc = compose();
    let services = &doc["services"];
    for name in keys(services) {
        let service = &services[name.as_str()];
        assert_eq!(
            service["restart"].as_str(),
            Some("unless-stopped"),
            "{name}"
        );
        let test = strings(&service["healthcheck"]["test"]);
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: {test:?}"
        );
        assert!(test.len() > 1, "{name}");
        for key in ["interval", "timeout"] {
            assert!(
                service["healthcheck"][key].as_str().is_some(),
                "{name}: {key}"
            );
        }
        assert_eq!(
            service["logging"]["options"]["max-size"].as_str(),
            Some("10m"),
            "{name}"
        );
        if name != "broker" {
            assert_eq!(
                service["depends_on"]["broker"]["condition"].as_str(),
                Some("service_healthy"),
                "{name}"
            );
        }
    }
}

#[test]
fn every_pmon_command_in_the_compose_file_exists_and_parses() {
    let doc = compose();
    let services = &doc["services"];
    let help = pmon_help();
    let env_vars = cli_env_vars();
    let mut commands = BTreeSet::new();
    for name in ["acquire", "historian", "web"] {
        let service = &services[name];
        assert_eq!(
            service["build"].as_str(),
            Some("."),
            "{name} builds the Dockerfile"
        );
        assert!(
            service["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("pmon:")),
            "{name}"
        );
        assert_eq!(service["read_only"].as_bool(), Some(true), "{name}");
        let command = strings(&service["command"]);
        let sub = check_pmon_args(&command, &format!("docker-compose.yml {name}"));
        commands.insert(sub);
        let health = strings(&service["healthcheck"]["test"]);
        assert_eq!(health[1], "pmon", "{name}: health checks use pmon itself");
        commands.insert(check_pmon_args(
            &health[2..],
            &format!("{name} healthcheck"),
        ));
        let environment = &service["environment"];
        for key in keys(environment) {
            if key.starts_with("PMON_") {
                assert!(env_vars.contains(&key), "{name}: pmon reads no {key}");
            }
        }
        assert_eq!(
            environment["PMON_MQTT_URL"].as_str(),
            Some("mqtt://broker:1883"),
            "{name}"
        );
        let mounts = strings(&service["volumes"]);
        assert!(
            mounts.contains(&"./deploy/pmon.toml:/etc/pmon/pmon.toml:ro".into()),
            "{name}: {mounts:?}"
        );
        assert_eq!(
            environment["PMON_CONFIG"].as_str(),
            Some("/etc/pmon/pmon.toml"),
            "{name}"
        );
    }
    for command in commands {
        if FUTURE_COMMANDS.contains(&command.as_str()) && !subcommands().contains(&command) {
            continue;
        }
        assert!(
            listed_in_help(&help, &command),
            "`pmon --help` does not list {command}"
        );
    }
}

#[test]
fn docker_compose_1_29_accepts_the_file() {
    let Some(program) = ["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        println!(
            "note: docker-compose is not installed, so `docker-compose config` was not run \
             (scripts/test installs Debian's docker-compose)"
        );
        return;
    };
    // 1.29 lists every service here, profiled or not.
    let output = Command::new(program)
        .current_dir(repo())
        .args(["-f", "docker-compose.yml", "config", "--services"])
        .env("I2C_GID", "998")
        .output()
        .expect("run docker-compose");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docker-compose config rejects the file:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let services: BTreeSet<&str> = stdout.lines().collect();
    assert_eq!(
        services,
        BTreeSet::from(["broker", "acquire", "historian", "web"])
    );
    // The full normalised form, for the record (and a second validation path).
    let output = Command::new(program)
        .current_dir(repo())
        .args([
            "-f",
            "docker-compose.yml",
            "--profile",
            "web",
            "config",
            "-q",
        ])
        .output()
        .expect("run docker-compose");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// mosquitto.conf

/// Directive → values, in order; comments and blank lines dropped.
fn mosquitto_conf(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        map.entry(key.to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    map
}

#[test]
fn mosquitto_conf_listens_persists_and_sizes_queues_for_the_historian() {
    let conf = mosquitto_conf(&read("mosquitto.conf"));
    let one = |key: &str| -> String {
        let values = conf
            .get(key)
            .unwrap_or_else(|| panic!("mosquitto.conf has no {key}"));
        assert_eq!(values.len(), 1, "{key} set more than once");
        values[0].clone()
    };
    assert_eq!(one("listener"), "1883");
    assert_eq!(one("protocol"), "mqtt");
    assert_eq!(one("persistence"), "true");
    assert_eq!(one("persistence_location"), "/mosquitto/data/");
    assert_eq!(one("allow_anonymous"), "true");
    let inflight: usize = one("max_inflight_messages").parse().expect("a number");
    let queued: usize = one("max_queued_messages").parse().expect("a number");
    assert_eq!((inflight, queued), (1000, 100_000));
    // The historian acknowledges after commit: the broker must let its window be in flight.
    let historian_window = pmon::settings::HistorianSection::default().max_unacked;
    assert!(
        inflight >= historian_window,
        "max_inflight_messages {inflight} is below the historian's max_unacked {historian_window}"
    );
    assert!(queued >= 100 * inflight);
    // The persistence directory is the compose file's volume.
    let doc = compose();
    assert!(
        strings(&doc["services"]["broker"]["volumes"]).contains(&format!(
            "mosquitto-data:{}",
            one("persistence_location").trim_end_matches('/')
        ))
    );
    // How to add a password file is explained next to allow_anonymous.
    let text = read("mosquitto.conf");
    assert!(text.contains("password_file") && text.contains("mosquitto_passwd"));
}

fn program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Kills the child when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_mosquitto_runs_with_mosquitto_conf_and_pmon_doctor_reaches_it() {
    let Some(mosquitto) = program("mosquitto") else {
        println!("note: mosquitto is not installed; mosquitto.conf was only parsed (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // mosquitto started as root drops to its own user, which must be able to write there.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let conf: String = read("mosquitto.conf")
        .lines()
        .map(|line| match line.split_whitespace().next() {
            Some("listener") => format!("listener {port} 127.0.0.1"),
            Some("persistence_location") => format!("persistence_location {}/", data.display()),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let conf_path = dir.path().join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let _broker = Child(
        Command::new(mosquitto)
            .arg("-c")
            .arg(&conf_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto"),
    );
    let url = format!("mqtt://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let output = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_pmon"))
            .args(["doctor", "--only", "broker", "--mqtt-url", &url])
            .stdin(Stdio::null())
            .output()
            .expect("pmon doctor");
        if output.status.success() || Instant::now() > deadline {
            break output;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "pmon doctor cannot reach mosquitto with mosquitto.conf:\n{}\nmosquitto log:\n{log}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!log.contains("Error"), "mosquitto complains:\n{log}");
}

// ---------------------------------------------------------------------------------------
// systemd units

type Unit = BTreeMap<String, Vec<(String, String)>>;

fn unit(path: &str) -> Unit {
    let mut sections: Unit = BTreeMap::new();
    let mut current = String::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            sections.entry(current.clone()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: not a key=value line: {line}"));
        assert!(!current.is_empty(), "{path}: {line} outside a section");
        sections
            .entry(current.clone())
            .or_default()
            .push((key.trim().to_string(), value.trim().to_string()));
    }
    sections
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .map(|entries| {
            entries
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn value<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let found = values(unit, section, key);
    assert_eq!(found.len(), 1, "[{section}] {key}: {found:?}");
    found[0]
}

const SERVICES: [(&str, &str); 4] = [
    ("pmon-broker.service", "broker"),
    ("pmon-acquire.service", "acquire"),
    ("pmon-historian.service", "historian"),
    ("pmon-web.service", "web"),
];

#[test]
fn systemd_units_start_existing_commands_hardened_under_pmon_target() {
    let help = pmon_help();
    for (file, command) in SERVICES {
        let unit = unit(&format!("deploy/systemd/{file}"));
        let exec = value(&unit, "Service", "ExecStart");
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/pmon"), "{file}");
        // `$PMON_…_ARGS` expand to extra arguments (empty by default).
        let args: Vec<String> = words
            .filter(|w| !w.starts_with('$'))
            .map(str::to_string)
            .collect();
        assert_eq!(check_pmon_args(&args, file), command, "{file}");
        if subcommands().contains(command) {
            assert!(
                listed_in_help(&help, command),
                "{file}: `pmon --help` lacks {command}"
            );
        } else {
            println!("note: {file} starts `pmon {command}`, a command of a later release");
        }
        assert_eq!(value(&unit, "Service", "Restart"), "on-failure", "{file}");
        assert_eq!(value(&unit, "Service", "DynamicUser"), "yes", "{file}");
        assert_eq!(value(&unit, "Service", "User"), "pmon", "{file}");
        assert_eq!(value(&unit, "Service", "StateDirectory"), "pmon", "{file}");
        assert_eq!(value(&unit, "Service", "ProtectSystem"), "strict", "{file}");
        assert_eq!(value(&unit, "Service", "NoNewPrivileges"), "yes", "{file}");
        assert_eq!(
            value(&unit, "Service", "EnvironmentFile"),
            "-/etc/default/pmon",
            "{file}"
        );
        assert_eq!(value(&unit, "Unit", "PartOf"), "pmon.target", "{file}");
        assert_eq!(value(&unit, "Install", "WantedBy"), "pmon.target", "{file}");
        let environment = value(&unit, "Service", "Environment");
        for assignment in environment.split_whitespace() {
            let key = assignment.split('=').next().unwrap_or("");
            assert!(cli_env_vars().contains(key), "{file}: pmon reads no {key}");
        }
        if command == "acquire" {
            let groups = value(&unit, "Service", "SupplementaryGroups");
            assert!(
                groups.split_whitespace().any(|g| g == "i2c"),
                "{file}: {groups}"
            );
            assert_eq!(value(&unit, "Service", "DevicePolicy"), "closed");
            assert!(values(&unit, "Service", "DeviceAllow").contains(&"char-i2c rw"));
            assert!(values(&unit, "Service", "PrivateDevices").is_empty());
        } else {
            assert_eq!(value(&unit, "Service", "PrivateDevices"), "yes", "{file}");
        }
    }
    let target = unit("deploy/systemd/pmon.target");
    let wants: BTreeSet<&str> = value(&target, "Unit", "Wants").split_whitespace().collect();
    assert_eq!(
        wants,
        BTreeSet::from([
            "pmon-broker.service",
            "pmon-acquire.service",
            "pmon-historian.service"
        ]),
        "the web UI is enabled by hand once its release is installed"
    );
    assert_eq!(value(&target, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn the_environment_file_sets_only_what_pmon_or_the_units_read() {
    let mut known = cli_env_vars();
    known.insert("RUST_LOG".into());
    for (file, _) in SERVICES {
        let exec = read(&format!("deploy/systemd/{file}"));
        for word in exec.split_whitespace().filter(|w| w.starts_with('$')) {
            known.insert(word.trim_start_matches('$').to_string());
        }
    }
    for line in read("deploy/systemd/pmon.default").lines() {
        let line = line.trim().trim_start_matches('#');
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !key.is_empty() {
            assert!(
                known.contains(key),
                "pmon.default sets {key}, which nothing reads"
            );
        }
    }
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Some(analyze) = program("systemd-analyze") else {
        println!("note: systemd-analyze is not installed; the units were only parsed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["pmon.target"]
        .into_iter()
        .chain(SERVICES.iter().map(|(file, _)| *file))
    {
        // The units start /usr/local/bin/pmon; verify checks that the binary exists.
        let text = read(&format!("deploy/systemd/{name}"))
            .replace("/usr/local/bin/pmon", env!("CARGO_BIN_EXE_pmon"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let output = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("pmon"))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify:\n{stderr}");
    if !output.status.success() {
        println!(
            "note: systemd-analyze verify exited {:?} (no systemd here?):\n{stderr}",
            output.status.code()
        );
    }
}

#[test]
fn the_install_script_installs_below_destdir() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("sh")
        .arg(repo().join("deploy/systemd/install.sh"))
        .arg(env!("CARGO_BIN_EXE_pmon"))
        .env("DESTDIR", dir.path())
        .output()
        .expect("run install.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for path in [
        "usr/local/bin/pmon",
        "etc/pmon/pmon.toml",
        "etc/default/pmon",
        "etc/systemd/system/pmon.target",
        "etc/systemd/system/pmon-acquire.service",
        "etc/systemd/system/pmon-web.service",
    ] {
        assert!(dir.path().join(path).exists(), "{path} not installed");
    }
}

// ---------------------------------------------------------------------------------------
// Dockerfile, .dockerignore, deploy/pmon.toml

/// Instructions with their arguments, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (op, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        instructions.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    instructions
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array: {text}: {e}"))
}

#[test]
fn dockerfile_builds_pmon_in_one_stage_and_runs_it_unprivileged_in_another() {
    let instructions = dockerfile();
    let all = |op: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let args = all("ARG");
    assert!(
        args.contains(&"RUST_IMAGE=rust:bookworm".into()),
        "{args:?}"
    );
    assert!(args.contains(&"RUNTIME_IMAGE=debian:bookworm-slim".into()));
    let from = all("FROM");
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(from[0].contains("${RUST_IMAGE}") && from[0].ends_with("AS builder"));
    assert_eq!(from[1], "${RUNTIME_IMAGE}");
    assert!(all("RUN")
        .iter()
        .any(|r| r.contains("cargo build --release --locked -p pmon")));
    assert!(all("COPY").contains(&"--from=builder /out/pmon /usr/local/bin/pmon".into()));
    for copy in all("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let source = copy.split_whitespace().next().unwrap_or("");
        assert!(repo().join(source).exists(), "COPY {source}: no such file");
    }
    assert_eq!(all("USER"), ["pmon"]);
    assert_eq!(all("VOLUME"), [r#"["/var/lib/pmon"]"#]);
    assert_eq!(json_array(&all("ENTRYPOINT")[0]), ["pmon"]);
    check_pmon_args(&json_array(&all("CMD")[0]), "Dockerfile CMD");
    let health = all("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    let (options, command) = health[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD [...]");
    assert!(options.contains("--interval=") && options.contains("--timeout="));
    let command = json_array(command);
    assert_eq!(command[0], "pmon");
    check_pmon_args(&command[1..], "Dockerfile HEALTHCHECK");
    let exposed: Vec<String> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(exposed, ["1883", "8080", "8081"]);
    let runtime_run = &all("RUN")[2];
    assert!(
        runtime_run.contains("--groups i2c"),
        "pmon is in the i2c group: {runtime_run}"
    );
    let ignore = read(".dockerignore");
    for excluded in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore lacks {excluded}"
        );
    }
}

#[test]
fn the_service_config_template_is_valid_and_names_the_bus() {
    let path = repo().join("deploy/pmon.toml");
    let config = pmon::settings::FileConfig::load(&path).expect("deploy/pmon.toml is valid");
    assert_eq!(config.data_dir.as_deref(), Some(Path::new("/var/lib/pmon")));
    assert_eq!(config.broker.bind.to_string(), "0.0.0.0:1883");
    let buses: Vec<(String, PathBuf)> = config
        .acquisition
        .bus
        .iter()
        .map(|b| (b.id.clone(), b.path.clone()))
        .collect();
    assert_eq!(buses, [("i2c-1".to_string(), PathBuf::from("/dev/i2c-1"))]);
    // The compose file passes in exactly the devices the template configures.
    let doc = compose();
    let devices = strings(&doc["services"]["acquire"]["devices"]);
    for (_, path) in buses {
        let device = path.display().to_string();
        assert!(
            devices.contains(&format!("{device}:{device}")),
            "{devices:?}"
        );
    }
}
